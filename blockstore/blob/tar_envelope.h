// The tar envelope of an overlaybd layer blob: an optional PAX extended header, then one regular
// file `overlaybd.commit` holding the ZFile, then padding to 512 and two zero blocks. A small
// bounds-checked ustar/PAX reader for exactly that shape, and the matching writer.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {

inline constexpr char kLayerBlobEntryName[] = "overlaybd.commit";

struct TarEntry {
  std::string name;
  uint64_t data_offset = 0;  // where the entry's content starts in the blob
  uint64_t size = 0;         // content length
};

// Finds the first regular file entry of the tar at the start of `file` and checks it is
// `overlaybd.commit` and lies inside the file. Reads only the headers (and the PAX records, at
// most 64 KiB). DATA_LOSS naming the file and field for any malformed header.
absl::StatusOr<TarEntry> ReadTarEnvelope(const RandomAccessFile& file);

// The bytes before the content: a PAX header carrying `size` (as overlaybd writes) and the
// ustar header of `overlaybd.commit`.
std::string EncodeTarEnvelopeHead(uint64_t content_size);
// The bytes after the content: zero padding to 512 and the two zero end blocks.
std::string EncodeTarEnvelopeTail(uint64_t content_size);

}  // namespace dadi::blockstore
