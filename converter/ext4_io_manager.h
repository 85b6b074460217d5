// A libext2fs io_manager whose channels read and write a BlockDevice.
//
// libext2fs opens a channel from a name string; the name made by Ext4IoChannelName carries the
// BlockDevice's address, so no global registry is needed and several file systems can be open at
// once in different threads. The BlockDevice must outlive the ext2_filsys.
//
// Each channel keeps a write-back cache of 4 KiB blocks: metadata (inode tables, directories,
// bitmaps) is modified many times while a layer is applied but reaches the device once, at
// flush, sorted and coalesced into contiguous runs. A dirty block whose content equals what it
// had when read from the device is not written at all, so an unchanged bitmap or descriptor
// block never lands in the new layer. Large writes (file data) bypass the cache.
#pragma once

#include <string>

#include "converter/block_device.h"
#include "converter/ext2fs_headers.h"

namespace dadi::converter {

// The io_manager (a static, immutable table of functions).
io_manager BlockDeviceIoManager();

// The name to pass to ext2fs_open2/ext2fs_initialize for `device`.
std::string Ext4IoChannelName(BlockDevice* device);

// The message of the last I/O error on `channel` (empty if none): libext2fs only passes error
// codes up, this keeps the BlockDevice's message for the caller's absl::Status.
std::string Ext4IoChannelLastError(io_channel channel);

}  // namespace dadi::converter
