#include "blockstore/blob/tar_envelope.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kBlock = 512;
constexpr size_t kMaxPaxSize = 64 << 10;
constexpr int kMaxEntries = 8;  // PAX/global headers tolerated before the commit entry

// ustar field offsets and lengths.
constexpr size_t kName = 0, kNameLen = 100;
constexpr size_t kMode = 100;
constexpr size_t kUid = 108, kGid = 116;
constexpr size_t kSize = 124, kSizeLen = 12;
constexpr size_t kMtime = 136;
constexpr size_t kChksum = 148, kChksumLen = 8;
constexpr size_t kTypeflag = 156;
constexpr size_t kMagic = 257;
constexpr size_t kUname = 265, kGname = 297;
constexpr size_t kPrefix = 345, kPrefixLen = 155;

std::string CString(const char* p, size_t n) {
  const void* nul = std::memchr(p, 0, n);
  return std::string(p, nul ? static_cast<const char*>(nul) - p : n);
}

// Octal number field (spaces/NULs around), or GNU base-256 when the top bit is set.
bool ParseNumber(const char* p, size_t n, uint64_t* out) {
  if (static_cast<unsigned char>(p[0]) & 0x80) {
    if (p[0] != '\x80') return false;  // negative or oversized
    uint64_t v = 0;
    for (size_t i = 1; i < n; ++i) {
      if (v >> 56) return false;
      v = (v << 8) | static_cast<unsigned char>(p[i]);
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < n && p[i] == ' ') ++i;
  uint64_t v = 0;
  bool any = false;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v >> 60) return false;
    v = v * 8 + static_cast<uint64_t>(p[i] - '0');
    any = true;
  }
  for (; i < n; ++i) {
    if (p[i] != ' ' && p[i] != '\0') return false;
  }
  *out = any ? v : 0;
  return true;
}

bool ChecksumOk(const char* h) {
  uint64_t stored;
  if (!ParseNumber(h + kChksum, kChksumLen, &stored)) return false;
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    bool in_field = i >= kChksum && i < kChksum + kChksumLen;
    sum += in_field ? ' ' : static_cast<unsigned char>(h[i]);
  }
  return sum == stored;
}

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// Parses PAX records "<len> <key>=<value>\n"; keeps size and path.
absl::Status ParsePax(absl::string_view data, absl::string_view file, std::optional<uint64_t>* size,
                      std::optional<std::string>* path) {
  while (!data.empty()) {
    if (data[0] == '\0') break;  // trailing NUL padding
    size_t sp = data.find(' ');
    uint64_t len;
    if (sp == absl::string_view::npos || sp == 0 || sp > 20 ||
        !absl::SimpleAtoi(data.substr(0, sp), &len) || len <= sp + 1 || len > data.size() ||
        data[len - 1] != '\n') {
      return absl::DataLossError(absl::StrCat(file, ": malformed PAX record in tar envelope"));
    }
    absl::string_view rec = data.substr(sp + 1, len - sp - 2);
    data.remove_prefix(len);
    size_t eq = rec.find('=');
    if (eq == absl::string_view::npos) {
      return absl::DataLossError(absl::StrCat(file, ": PAX record without '=' in tar envelope"));
    }
    absl::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
    if (key == "size") {
      uint64_t v;
      if (!absl::SimpleAtoi(value, &v)) {
        return absl::DataLossError(absl::StrCat(file, ": PAX field size is not a number"));
      }
      *size = v;
    } else if (key == "path") {
      *path = std::string(value);
    }
  }
  return absl::OkStatus();
}

void PutOctal(char* p, size_t n, uint64_t v) {
  // n-1 octal digits, then NUL (ustar style).
  std::string s = absl::StrFormat("%0*o", static_cast<int>(n - 1), v);
  std::memcpy(p, s.data(), n - 1);
  p[n - 1] = '\0';
}

void FinishHeader(char* h) {
  std::memset(h + kChksum, ' ', kChksumLen);
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += static_cast<unsigned char>(h[i]);
  std::string s = absl::StrFormat("%06o", sum);
  std::memcpy(h + kChksum, s.data(), 6);
  h[kChksum + 6] = '\0';
  h[kChksum + 7] = ' ';
}

void MakeHeader(char* h, absl::string_view name, uint64_t size, char type) {
  std::memset(h, 0, kBlock);
  std::memcpy(h + kName, name.data(), std::min(name.size(), kNameLen));
  PutOctal(h + kMode, 8, 0644);
  PutOctal(h + kUid, 8, 0);
  PutOctal(h + kGid, 8, 0);
  PutOctal(h + kSize, kSizeLen, size);
  PutOctal(h + kMtime, 12, 0);
  h[kTypeflag] = type;
  std::memcpy(h + kMagic,
              "ustar\0"
              "00",
              8);
  std::memcpy(h + kUname, "root", 4);
  std::memcpy(h + kGname, "root", 4);
  FinishHeader(h);
}

}  // namespace

absl::StatusOr<TarEntry> ReadTarEnvelope(const RandomAccessFile& file) {
  const std::string name = file.Name();
  const uint64_t fsize = file.Size();
  uint64_t pos = 0;
  std::optional<uint64_t> pax_size;
  std::optional<std::string> pax_path;
  char h[kBlock];
  for (int entry = 0; entry < kMaxEntries; ++entry) {
    if (pos > fsize || fsize - pos < kBlock) {
      return absl::DataLossError(
          absl::StrCat(name, ": tar envelope ends before the ", kLayerBlobEntryName, " entry"));
    }
    if (absl::Status s = PreadExact(file, pos, kBlock, h, "tar header"); !s.ok()) return s;
    if (AllZero(h, kBlock)) {
      return absl::DataLossError(
          absl::StrCat(name, ": tar envelope has no ", kLayerBlobEntryName, " entry"));
    }
    if (!ChecksumOk(h)) {
      return absl::DataLossError(
          absl::StrCat(name, ": tar header at offset ", pos, " has a bad field chksum"));
    }
    if (std::memcmp(h + kMagic, "ustar", 5) != 0) {
      return absl::DataLossError(
          absl::StrCat(name, ": tar header at offset ", pos, " lacks the ustar magic"));
    }
    uint64_t size;
    if (!ParseNumber(h + kSize, kSizeLen, &size)) {
      return absl::DataLossError(
          absl::StrCat(name, ": tar header at offset ", pos, " has a malformed field size"));
    }
    const char type = h[kTypeflag];
    const uint64_t data = pos + kBlock;
    if (type == 'x' || type == 'g') {
      if (size > kMaxPaxSize || size > fsize - data) {
        return absl::DataLossError(absl::StrCat(name, ": PAX header at offset ", pos, " size ",
                                                size, " is too large or past the end"));
      }
      std::string records(size, '\0');
      if (absl::Status s = PreadExact(file, data, size, records.data(), "PAX records"); !s.ok()) {
        return s;
      }
      if (type == 'x') {
        if (absl::Status s = ParsePax(records, name, &pax_size, &pax_path); !s.ok()) return s;
      }
      pos = data + (size + kBlock - 1) / kBlock * kBlock;
      continue;
    }
    if (type != '0' && type != '\0') {
      return absl::DataLossError(absl::StrCat(name, ": tar entry at offset ", pos,
                                              " has typeflag '", std::string(1, type),
                                              "', expected a regular file"));
    }
    TarEntry e;
    if (pax_path.has_value()) {
      e.name = *pax_path;
    } else {
      std::string prefix = CString(h + kPrefix, kPrefixLen);
      e.name = CString(h + kName, kNameLen);
      if (!prefix.empty()) e.name = prefix + "/" + e.name;
    }
    if (e.name.rfind("./", 0) == 0) e.name.erase(0, 2);
    if (e.name != kLayerBlobEntryName) {
      return absl::DataLossError(absl::StrCat(name, ": tar entry is named '", e.name,
                                              "', expected ", kLayerBlobEntryName));
    }
    e.size = pax_size.value_or(size);
    e.data_offset = data;
    if (e.size > fsize - data) {
      return absl::DataLossError(absl::StrCat(name, ": tar entry ", kLayerBlobEntryName, " size ",
                                              e.size, " at offset ", data,
                                              " runs past the end of the blob (", fsize, ")"));
    }
    return e;
  }
  return absl::DataLossError(
      absl::StrCat(name, ": more than ", kMaxEntries, " tar headers before ", kLayerBlobEntryName));
}

std::string EncodeTarEnvelopeHead(uint64_t content_size) {
  std::string body = absl::StrCat("size=", content_size, "\n");
  // The length prefix counts itself.
  size_t len = body.size() + 2;
  while (absl::StrCat(len, " ", body).size() != len) ++len;
  std::string pax = absl::StrCat(len, " ", body);
  std::string out(kBlock, '\0');
  MakeHeader(out.data(), "overlaybd.pax", pax.size(), 'x');
  out += pax;
  out.resize((out.size() + kBlock - 1) / kBlock * kBlock, '\0');
  size_t at = out.size();
  out.resize(at + kBlock);
  // The ustar size field holds the size too when it fits in 11 octal digits.
  MakeHeader(out.data() + at, kLayerBlobEntryName,
             content_size < (uint64_t{1} << 33) ? content_size : 0, '0');
  return out;
}

std::string EncodeTarEnvelopeTail(uint64_t content_size) {
  size_t pad = static_cast<size_t>((kBlock - content_size % kBlock) % kBlock);
  return std::string(pad + 2 * kBlock, '\0');
}

}  // namespace dadi::blockstore
