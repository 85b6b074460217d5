#include "blockstore/remote/startup_trace.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "blockstore/remote/digest.h"
#include "nlohmann/json.hpp"

namespace dadi::blockstore {
namespace {

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("startup trace: ", what));
}

absl::Status ParseFiles(const nlohmann::json& j, StartupTrace* trace) {
  auto files = j.find("files");
  if (files == j.end()) return absl::OkStatus();
  if (!files->is_array()) return Invalid("files is not an array");
  size_t total = 0;  // ranges of all files
  for (size_t i = 0; i < files->size(); ++i) {
    const nlohmann::json& f = (*files)[i];
    if (!f.is_array() || f.size() != 2 || !f[0].is_string() || !f[1].is_array()) {
      return Invalid(absl::StrCat("file ", i, " is not [path, ranges]"));
    }
    TracedFile file;
    file.path = f[0].get<std::string>();
    if (!IsSafeRelativePath(file.path)) {
      return Invalid(absl::StrCat("file ", i, ": \"", file.path.substr(0, 200),
                                  "\" is not a relative path without . or .. components"));
    }
    total += f[1].size();
    if (total > kMaxStartupTraceRanges) {
      return Invalid(absl::StrCat("more than ", kMaxStartupTraceRanges, " file ranges"));
    }
    for (const nlohmann::json& r : f[1]) {
      if (!r.is_array() || r.size() != 2 || !r[0].is_number_unsigned() ||
          !r[1].is_number_unsigned()) {
        return Invalid(absl::StrCat("a range of file ", i, " is not [offset, length]"));
      }
      ByteRange range{r[0].get<uint64_t>(), r[1].get<uint64_t>()};
      if (range.length == 0 || range.length > kMaxStartupTraceRange ||
          range.offset > UINT64_MAX - range.length) {
        return Invalid(absl::StrCat("a range of file ", i, " is empty, too long or past 2^64"));
      }
      file.ranges.push_back(range);
    }
    trace->files.push_back(std::move(file));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsSafeRelativePath(absl::string_view path) {
  if (path.empty() || path.size() > kMaxTracedFilePath || path.front() == '/' ||
      path.find('\0') != absl::string_view::npos) {
    return false;
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == absl::string_view::npos) end = path.size();
    absl::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

std::string SerializeStartupTrace(const StartupTrace& trace) {
  nlohmann::ordered_json j;
  j["mediaType"] = std::string(kStartupTraceMediaType);
  j["virtualSize"] = trace.virtual_size;
  nlohmann::ordered_json ranges = nlohmann::ordered_json::array();
  for (const TraceRange& r : trace.ranges) ranges.push_back({r.offset, r.length});
  j["ranges"] = std::move(ranges);
  if (!trace.stored.empty()) {
    nlohmann::ordered_json stored = nlohmann::ordered_json::array();
    for (const StoredRange& s : trace.stored) {
      stored.push_back({s.blob, s.range.offset, s.range.length});
    }
    j["stored"] = std::move(stored);
  }
  if (!trace.packs.empty()) {
    nlohmann::ordered_json packs = nlohmann::ordered_json::array();
    for (const StartupPackRef& p : trace.packs) {
      packs.push_back({{"digest", p.digest}, {"size", p.size}, {"ranges", p.ranges}});
    }
    j["packs"] = std::move(packs);
  }
  if (!trace.files.empty()) {
    nlohmann::ordered_json files = nlohmann::ordered_json::array();
    for (const TracedFile& f : trace.files) {
      nlohmann::ordered_json file_ranges = nlohmann::ordered_json::array();
      for (const ByteRange& r : f.ranges) file_ranges.push_back({r.offset, r.length});
      files.push_back({f.path, std::move(file_ranges)});
    }
    j["files"] = std::move(files);
  }
  return j.dump();
}

uint64_t StoredBytes(absl::Span<const StoredRange> stored) {
  uint64_t bytes = 0;
  for (const StoredRange& s : stored) bytes += s.range.length;
  return bytes;
}

namespace {

absl::Status ParseStored(const nlohmann::json& j, StartupTrace* trace) {
  auto stored = j.find("stored");
  if (stored == j.end()) return absl::OkStatus();
  if (!stored->is_array()) return Invalid("stored is not an array");
  if (stored->size() > kMaxStartupTraceRanges) {
    return Invalid(absl::StrCat(stored->size(), " stored ranges, more than the limit of ",
                                kMaxStartupTraceRanges));
  }
  trace->stored.reserve(stored->size());
  for (size_t i = 0; i < stored->size(); ++i) {
    const nlohmann::json& r = (*stored)[i];
    if (!r.is_array() || r.size() != 3 || !r[0].is_string() || !r[1].is_number_unsigned() ||
        !r[2].is_number_unsigned()) {
      return Invalid(absl::StrCat("stored range ", i, " is not [digest, offset, length]"));
    }
    StoredRange s{r[0].get<std::string>(), {r[1].get<uint64_t>(), r[2].get<uint64_t>()}};
    if (!IsValidDigest(s.blob)) {
      return Invalid(absl::StrCat("stored range ", i, ": \"", s.blob, "\" is not a digest"));
    }
    if (s.range.length == 0 || s.range.length > kMaxStartupTraceRange ||
        s.range.offset > UINT64_MAX - s.range.length) {
      return Invalid(absl::StrCat("stored range ", i, " [", s.range.offset, ", +", s.range.length,
                                  ") is empty, too long or past 2^64"));
    }
    trace->stored.push_back(std::move(s));
  }
  auto packs = j.find("packs");
  if (packs == j.end()) return absl::OkStatus();
  if (!packs->is_array() || packs->empty()) return Invalid("packs is not a non-empty array");
  if (packs->size() > kMaxStartupPacks) {
    return Invalid(
        absl::StrCat(packs->size(), " packs, more than the limit of ", kMaxStartupPacks));
  }
  size_t next = 0;  // the first stored range of the next pack
  uint64_t packed = 0;
  for (size_t i = 0; i < packs->size(); ++i) {
    const nlohmann::json& p = (*packs)[i];
    if (!p.is_object()) return Invalid(absl::StrCat("pack ", i, " is not an object"));
    auto digest = p.find("digest");
    auto size = p.find("size");
    auto count = p.find("ranges");
    if (digest == p.end() || !digest->is_string() ||
        !IsValidDigest(digest->get_ref<const std::string&>())) {
      return Invalid(absl::StrCat("pack ", i, ": digest is not a digest"));
    }
    if (size == p.end() || !size->is_number_unsigned() || count == p.end() ||
        !count->is_number_unsigned()) {
      return Invalid(absl::StrCat("pack ", i, ": size or ranges is not a non-negative integer"));
    }
    StartupPackRef ref{digest->get<std::string>(), size->get<uint64_t>(), count->get<size_t>()};
    if (ref.ranges == 0 || ref.ranges > trace->stored.size() - next) {
      return Invalid(absl::StrCat("pack ", i, ": ", ref.ranges, " ranges, past the ",
                                  trace->stored.size(), " stored ranges"));
    }
    uint64_t bytes = 0;
    for (size_t k = next; k < next + ref.ranges; ++k) bytes += trace->stored[k].range.length;
    if (ref.size != bytes) {
      return Invalid(absl::StrCat("pack ", i, ": size ", ref.size, " is not the ", bytes,
                                  " bytes of its stored ranges"));
    }
    next += ref.ranges;
    packed += bytes;
    trace->packs.push_back(std::move(ref));
  }
  if (next != trace->stored.size()) {
    return Invalid(
        absl::StrCat("the packs hold ", next, " of the ", trace->stored.size(), " stored ranges"));
  }
  if (packed > kMaxStartupPackBytes) {
    return Invalid(
        absl::StrCat("packs of ", packed, " bytes, more than the limit of ", kMaxStartupPackBytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StartupTrace> ParseStartupTrace(absl::string_view json) {
  if (json.size() > kMaxStartupTraceBytes) {
    return Invalid(
        absl::StrCat(json.size(), " bytes, more than the limit of ", kMaxStartupTraceBytes));
  }
  nlohmann::json j = nlohmann::json::parse(json.begin(), json.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("not JSON");
  if (!j.is_object()) return Invalid("not a JSON object");
  auto media = j.find("mediaType");
  if (media == j.end() || !media->is_string() ||
      media->get_ref<const std::string&>() != kStartupTraceMediaType) {
    return Invalid(absl::StrCat("mediaType is not ", kStartupTraceMediaType));
  }
  auto size = j.find("virtualSize");
  if (size == j.end() || !size->is_number_unsigned()) {
    return Invalid("virtualSize is not a non-negative integer");
  }
  StartupTrace trace;
  trace.virtual_size = size->get<uint64_t>();
  auto ranges = j.find("ranges");
  if (ranges == j.end() || !ranges->is_array()) return Invalid("ranges is not an array");
  if (ranges->size() > kMaxStartupTraceRanges) {
    return Invalid(
        absl::StrCat(ranges->size(), " ranges, more than the limit of ", kMaxStartupTraceRanges));
  }
  trace.ranges.reserve(ranges->size());
  for (size_t i = 0; i < ranges->size(); ++i) {
    const nlohmann::json& r = (*ranges)[i];
    if (!r.is_array() || r.size() != 2 || !r[0].is_number_unsigned() ||
        !r[1].is_number_unsigned()) {
      return Invalid(absl::StrCat("range ", i, " is not [offset, length]"));
    }
    TraceRange range{r[0].get<uint64_t>(), r[1].get<uint64_t>()};
    if (range.length == 0 || range.length > kMaxStartupTraceRange ||
        range.offset >= trace.virtual_size || range.length > trace.virtual_size - range.offset) {
      return Invalid(absl::StrCat("range ", i, " [", range.offset, ", +", range.length,
                                  ") is empty, too long or outside the disk of ",
                                  trace.virtual_size, " bytes"));
    }
    trace.ranges.push_back(range);
  }
  if (j.contains("packs") && !j.contains("stored")) return Invalid("packs without stored ranges");
  if (absl::Status s = ParseStored(j, &trace); !s.ok()) return s;
  if (absl::Status s = ParseFiles(j, &trace); !s.ok()) return s;
  return trace;
}

void TraceRecorder::Record(uint64_t offset, uint64_t length) {
  if (length == 0 || offset >= trace_.virtual_size) return;
  length = std::min({length, trace_.virtual_size - offset, kMaxStartupTraceRange});
  // Skip reads fully inside a recorded range (the page cache makes repeats rare, but a re-read
  // after eviction is no news).
  const uint64_t end = offset + length;
  auto next = seen_.upper_bound(offset);  // first range starting after `offset`
  if (next != seen_.begin() && std::prev(next)->second >= end) return;
  const bool continues = !trace_.ranges.empty() &&
                         trace_.ranges.back().offset + trace_.ranges.back().length == offset &&
                         trace_.ranges.back().length + length <= kMaxStartupTraceRange;
  if (continues) {
    trace_.ranges.back().length += length;
  } else if (!full()) {
    trace_.ranges.push_back(TraceRange{offset, length});
  } else {
    return;  // full: later reads are not recorded
  }
  // Merge [offset, end) with the recorded ranges it overlaps or touches.
  uint64_t lo = offset, hi = end;
  auto it = next;
  if (it != seen_.begin() && std::prev(it)->second >= offset) --it;
  while (it != seen_.end() && it->first <= end) {
    lo = std::min(lo, it->first);
    hi = std::max(hi, it->second);
    it = seen_.erase(it);
  }
  seen_.emplace(lo, hi);
}

}  // namespace dadi::blockstore
