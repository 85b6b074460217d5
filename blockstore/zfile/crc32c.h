// CRC32C (Castagnoli) as overlaybd uses it: the raw reflected CRC register, with no inversion
// before or after. Extend(0, ...) is what overlaybd stores for the ZFile header digest and the
// jump table; per-block CRCs start from kBlockSeed. This is exactly what the SSE4.2 crc32
// instruction computes, which is why the convention is cheap.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dadi::blockstore::crc32c {

// Initial register value of the CRC stored after each compressed ZFile block (overlaybd's choice;
// confirmed against its reference blobs).
inline constexpr uint32_t kBlockSeed = 100007;

// Continues the CRC register `crc` over `n` bytes at `data`. Thread-safe, no allocation.
uint32_t Extend(uint32_t crc, const void* data, size_t n);

// Value of Extend(0, data, n).
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// True when Extend uses the SSE4.2 instruction on this CPU.
bool HardwareAccelerated();

namespace internal {
// The table-driven path, so tests can compare it with the hardware path.
uint32_t ExtendPortableForTest(uint32_t crc, const void* data, size_t n);
}  // namespace internal

}  // namespace dadi::blockstore::crc32c
