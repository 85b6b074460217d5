// libext2fs headers, with the warnings they raise under our flags silenced. Include this instead
// of <ext2fs/ext2fs.h>.
#pragma once

#pragma GCC system_header
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
