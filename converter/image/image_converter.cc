#include "converter/image/image_converter.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "blockstore/remote/digest.h"
#include "nlohmann/json.hpp"

namespace dadi::converter::image {
namespace {

using blockstore::PushOutcome;
using ojson = nlohmann::ordered_json;

bool PlatformMatches(const std::optional<blockstore::Platform>& have,
                     const blockstore::Platform& want) {
  if (!have) return false;
  if (have->os != want.os || have->architecture != want.architecture) return false;
  return want.variant.empty() || have->variant.empty() || want.variant == have->variant;
}

const char* OutcomeName(PushOutcome o) {
  switch (o) {
    case PushOutcome::kUploaded:
      return "uploaded";
    case PushOutcome::kAlreadyExists:
      return "exists";
    case PushOutcome::kMounted:
      return "mounted";
  }
  return "?";
}

void Count(PushOutcome o, PushStats* stats) {
  if (o == PushOutcome::kUploaded) ++stats->uploaded;
  if (o == PushOutcome::kAlreadyExists) ++stats->already_existed;
  if (o == PushOutcome::kMounted) ++stats->mounted;
}

// The uploader: converted layers are pushed in order on one thread while the next layer is
// applied. The queue is bounded so that conversion cannot run far ahead of a slow upload.
class Uploader {
 public:
  struct Job {
    LayerEvent event;
    std::string digest, path, mount_from;
  };
  Uploader(ImageDestination& dest, DedupDb* db, ProgressSink* progress, size_t capacity,
           std::mutex* progress_mu)
      : dest_(dest),
        db_(db),
        progress_(progress),
        capacity_(capacity ? capacity : 1),
        progress_mu_(progress_mu),
        thread_([this] { Run(); }) {}
  ~Uploader() { (void)Finish(); }

  // False when the uploader already failed (the caller stops converting).
  bool Push(Job job) {
    std::unique_lock<std::mutex> l(mu_);
    space_.wait(l, [&] { return queue_.size() < capacity_ || !status_.ok(); });
    if (!status_.ok()) return false;
    queue_.push_back(std::move(job));
    ready_.notify_one();
    return true;
  }
  absl::Status Finish() {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
      ready_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
    return status_;
  }
  PushStats stats() const { return stats_; }

 private:
  void Run() {
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> l(mu_);
        ready_.wait(l, [&] { return !queue_.empty() || closed_; });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
        space_.notify_one();
      }
      Report(job.event, LayerEvent::kUploading, "");
      auto outcome = dest_.PutBlob(job.digest, job.path, job.mount_from);
      if (outcome.ok() && db_ != nullptr && !dest_.Repository().empty()) {
        // Best effort: a later conversion to another repository can mount from here.
        (void)db_->SetRepository(job.digest, dest_.Repository());
      }
      std::lock_guard<std::mutex> l(mu_);
      if (!outcome.ok()) {
        status_ = absl::Status(outcome.status().code(),
                               absl::StrCat("upload of layer ", job.event.index + 1, " (",
                                            job.digest, "): ", outcome.status().message()));
        queue_.clear();
        space_.notify_all();
        return;
      }
      Count(*outcome, &stats_);
      Report(job.event, LayerEvent::kDone, OutcomeName(*outcome));
    }
  }
  void Report(LayerEvent e, LayerEvent::State state, const std::string& outcome) {
    if (progress_ == nullptr) return;
    e.state = state;
    e.push_outcome = outcome;
    std::lock_guard<std::mutex> l(*progress_mu_);
    progress_->OnLayer(e);
  }

  ImageDestination& dest_;
  DedupDb* db_;
  ProgressSink* progress_;
  size_t capacity_;
  std::mutex* progress_mu_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<Job> queue_;
  bool closed_ = false;
  absl::Status status_;
  PushStats stats_;
  std::thread thread_;
};

// The next layer's tar, fetched on a thread of its own while the current layer is converted
// (a registry download overlaps the apply; a local file just opens). The source is never used
// by two threads at once: the converter takes (joins) a prefetch before it calls the source
// again. The destructor waits for a fetch still running (a conversion that failed meanwhile).
class LayerPrefetch {
 public:
  LayerPrefetch(ImageSource& source, std::string digest)
      : thread_([this, &source, digest = std::move(digest)] { result_ = source.Blob(digest); }) {}
  LayerPrefetch(const LayerPrefetch&) = delete;
  LayerPrefetch& operator=(const LayerPrefetch&) = delete;
  ~LayerPrefetch() {
    if (thread_.joinable()) thread_.join();
  }
  absl::StatusOr<std::unique_ptr<blockstore::RandomAccessFile>> Take() {
    thread_.join();
    return std::move(result_);
  }

 private:
  absl::StatusOr<std::unique_ptr<blockstore::RandomAccessFile>> result_ =
      absl::UnknownError("layer not fetched");
  std::thread thread_;  // last: starts once result_ exists
};

// Layer i's compression (sealed file → blob), on a thread of its own while layer i+1 is applied
// over the sealed file. The destructor waits for the compression and removes the sealed file and
// a blob not taken (a conversion that failed meanwhile), so the sealed file must outlive the
// apply that reads it: the converter takes the result after the next apply.
class BackgroundCompression {
 public:
  BackgroundCompression(const LayerCompressFn& compress, std::string sealed_path,
                        const std::string& uuid, std::string out_path, const LayerOptions& options)
      : sealed_path_(std::move(sealed_path)),
        out_path_(std::move(out_path)),
        thread_([this, &compress, uuid, &options] {
          result_ = compress(sealed_path_, uuid, out_path_, options);
        }) {}
  BackgroundCompression(const BackgroundCompression&) = delete;
  BackgroundCompression& operator=(const BackgroundCompression&) = delete;
  ~BackgroundCompression() {
    if (thread_.joinable()) thread_.join();
    ::unlink(sealed_path_.c_str());
    if (!taken_) ::unlink(out_path_.c_str());
  }
  // The blob (renamed away by the caller), or the compression's error.
  absl::StatusOr<LayerResult> Take() {
    if (thread_.joinable()) thread_.join();
    taken_ = result_.ok();
    return std::move(result_);
  }

 private:
  const std::string sealed_path_, out_path_;
  bool taken_ = false;
  absl::StatusOr<LayerResult> result_ = absl::UnknownError("layer not compressed");
  std::thread thread_;  // last: starts once the rest exists
};

}  // namespace

std::string LayerOptions::Key() const {
  return absl::StrCat(algorithm, "/", level, "/", block_size, "/", vsize);
}

std::vector<std::string> ChainIds(const std::vector<std::string>& diff_ids) {
  std::vector<std::string> out;
  for (const auto& d : diff_ids) {
    out.push_back(out.empty() ? d : blockstore::Sha256Digest(absl::StrCat(out.back(), " ", d)));
  }
  return out;
}

std::string DeterministicUuid(absl::string_view seed) {
  std::string hex = blockstore::Sha256Digest(seed).substr(7, 32);
  hex[12] = '5';  // version 5 (name-based)
  static constexpr char kVariant[] = "89ab";
  hex[16] = kVariant[(hex[16] <= '9' ? hex[16] - '0' : hex[16] - 'a' + 10) & 3];
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20, 12));
}

std::string ConvertSummary::ToJson() const {
  ojson j;
  j["digest"] = digest;
  j["media_type"] = media_type;
  j["layers"] = layers;
  j["reused_layers"] = reused;
  j["bytes_in"] = bytes_in;
  j["bytes_out"] = bytes_out;
  j["ratio"] = bytes_in ? static_cast<double>(bytes_out) / static_cast<double>(bytes_in) : 0.0;
  j["seconds"] = seconds;
  j["blobs_uploaded"] = pushes.uploaded;
  j["blobs_existing"] = pushes.already_existed;
  j["blobs_mounted"] = pushes.mounted;
  return j.dump();
}

ImageConverter::ImageConverter(ConvertOptions options, LayerConverterFn layer_converter,
                               DedupDb* db, ProgressSink* progress)
    : options_(std::move(options)),
      layer_converter_(std::move(layer_converter)),
      db_(db),
      progress_(progress) {}

ImageConverter::ImageConverter(ConvertOptions options, StagedLayerConverter staged, DedupDb* db,
                               ProgressSink* progress)
    : options_(std::move(options)), staged_(std::move(staged)), db_(db), progress_(progress) {}

absl::StatusOr<ConvertSummary> ImageConverter::Convert(ImageSource& source,
                                                       ImageDestination& dest) {
  auto start = std::chrono::steady_clock::now();
  ConvertSummary summary;
  std::error_code ec;
  std::filesystem::create_directories(options_.store_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("blob store ", options_.store_dir, ": ", ec.message()));
  }
  auto top = source.TopManifest();
  if (!top.ok()) return top.status();
  ManifestDocument out;
  if (blockstore::IsIndexMediaType(top->media_type)) {
    auto index = blockstore::ParseImageIndex(top->body);
    if (!index.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("index ", top->digest, ": ", index.status().message()));
    }
    blockstore::ImageIndex new_index = *index;
    new_index.manifests.clear();
    for (const auto& d : index->manifests) {
      // Attestations and other artifacts ("unknown/unknown") refer to the source image.
      if (d.platform && d.platform->os == "unknown") continue;
      if (options_.platform && !PlatformMatches(d.platform, *options_.platform)) continue;
      auto child = source.Manifest(d.digest);
      if (!child.ok()) return child.status();
      if (!blockstore::IsManifestMediaType(child->media_type)) {
        return absl::InvalidArgumentError(absl::StrCat("index ", top->digest, ": entry ", d.digest,
                                                       " is a ", child->media_type,
                                                       ", not an image manifest"));
      }
      auto converted = ConvertManifest(source, dest, *child,
                                       d.platform ? PlatformString(*d.platform) : "", &summary);
      if (!converted.ok()) return converted.status();
      if (absl::Status s = dest.PutManifest(*converted); !s.ok()) return s;
      blockstore::Descriptor nd = d;
      nd.media_type = converted->media_type;
      nd.digest = converted->digest;
      nd.size = static_cast<int64_t>(converted->body.size());
      new_index.manifests.push_back(std::move(nd));
    }
    if (new_index.manifests.empty()) {
      return absl::NotFoundError(
          absl::StrCat("index ", top->digest, ": no image for platform ",
                       options_.platform ? PlatformString(*options_.platform) : "any"));
    }
    out.media_type = top->media_type;
    if (new_index.media_type.empty()) new_index.media_type = top->media_type;
    out.body = blockstore::SerializeImageIndex(new_index);
    out.digest = blockstore::Sha256Digest(out.body);
  } else {
    auto converted = ConvertManifest(source, dest, *top, "", &summary);
    if (!converted.ok()) return converted.status();
    out = *std::move(converted);
  }
  if (absl::Status s = dest.PutTopManifest(out); !s.ok()) return s;
  if (absl::Status s = dest.Commit(); !s.ok()) return s;
  summary.digest = out.digest;
  summary.media_type = out.media_type;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

absl::StatusOr<ManifestDocument> ImageConverter::ConvertManifest(ImageSource& source,
                                                                 ImageDestination& dest,
                                                                 const ManifestDocument& doc,
                                                                 const std::string& platform,
                                                                 ConvertSummary* summary) {
  auto manifest = blockstore::ParseImageManifest(doc.body);
  if (!manifest.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest ", doc.digest, ": ", manifest.status().message()));
  }
  auto config_text = source.SmallBlob(manifest->config.digest);
  if (!config_text.ok()) {
    return absl::Status(
        config_text.status().code(),
        absl::StrCat("config of manifest ", doc.digest, ": ", config_text.status().message()));
  }
  ojson config = ojson::parse(*config_text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object() || !config.contains("rootfs") ||
      !config["rootfs"].is_object() || !config["rootfs"].contains("diff_ids") ||
      !config["rootfs"]["diff_ids"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("config ", manifest->config.digest,
                                                   ": not an image config (no rootfs.diff_ids)"));
  }
  std::vector<std::string> diff_ids;
  for (const auto& d : config["rootfs"]["diff_ids"]) {
    if (!d.is_string() || !blockstore::IsValidDigest(d.get<std::string>())) {
      return absl::InvalidArgumentError(
          absl::StrCat("config ", manifest->config.digest, ": bad rootfs.diff_ids entry"));
    }
    diff_ids.push_back(d.get<std::string>());
  }
  if (diff_ids.size() != manifest->layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest ", doc.digest, ": ", manifest->layers.size(),
                     " layers but config has ", diff_ids.size(), " diff_ids"));
  }
  const bool docker = manifest->media_type == blockstore::kDockerManifestMediaType;
  const std::string options_key = options_.layer.Key();
  const std::vector<std::string> chain_ids = ChainIds(diff_ids);
  const std::string repository = dest.Repository();
  const std::string dest_host = repository.substr(0, repository.find('/'));

  std::mutex progress_mu;
  auto report = [&](LayerEvent e) {
    if (progress_ == nullptr) return;
    std::lock_guard<std::mutex> l(progress_mu);
    progress_->OnLayer(e);
  };
  Uploader uploader(dest, db_, progress_, options_.upload_queue, &progress_mu);

  std::vector<std::string> lower_paths;
  std::vector<blockstore::Descriptor> layers;
  std::string parent_uuid;
  const int total = static_cast<int>(manifest->layers.size());
  const bool staged = staged_.apply != nullptr && staged_.compress != nullptr;
  if (!staged && layer_converter_ == nullptr) {
    return absl::InvalidArgumentError("image converter: no layer converter (or half a staged one)");
  }
  const std::string& sealed_dir =
      options_.work_dir.empty() ? options_.store_dir : options_.work_dir;
  // Layer `prefetch_index`'s tar, being fetched; layers the database has are not fetched.
  std::unique_ptr<LayerPrefetch> prefetch;
  int prefetch_index = -1;
  auto start_prefetch = [&](int j) -> absl::Status {
    if (j >= total) return absl::OkStatus();
    if (db_ != nullptr) {
      auto hit = db_->Lookup(chain_ids[j], options_key);
      if (!hit.ok()) return hit.status();
      if (hit->has_value()) return absl::OkStatus();
    }
    prefetch = std::make_unique<LayerPrefetch>(source, manifest->layers[j].digest);
    prefetch_index = j;
    return absl::OkStatus();
  };
  auto layer_error = [&](int i, const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("layer ", i + 1, " (", manifest->layers[i].digest,
                                               "): ", s.message()));
  };
  // A converted layer's blob (at a temporary name) goes into the store and the database.
  auto store = [&](int i, const std::string& uuid,
                   const LayerResult& converted) -> absl::StatusOr<DedupRecord> {
    DedupRecord rec;
    rec.digest = converted.digest;
    rec.size = converted.size;
    rec.uuid = uuid;
    rec.path = absl::StrCat(options_.store_dir, "/", converted.digest.substr(7));
    if (::rename(converted.blob_path.c_str(), rec.path.c_str()) != 0) {
      return absl::InternalError(
          absl::StrCat("layer ", i + 1, ": rename ", converted.blob_path, " to ", rec.path));
    }
    if (db_ != nullptr) {
      if (absl::Status s = db_->Put(chain_ids[i], options_key, rec); !s.ok()) return s;
    }
    return rec;
  };
  // Layer i is done (converted or reused): counted, queued for upload, described. Layers
  // finish in order. False when the uploader failed (its error is returned by Finish).
  auto finish = [&](int i, LayerEvent ev, const DedupRecord& rec, bool reused) -> bool {
    const blockstore::Descriptor& src = manifest->layers[i];
    ev.bytes_out = rec.size;
    if (reused) {
      ++summary->reused;
      report(ev);
    }
    summary->bytes_in += ev.bytes_in;
    summary->bytes_out += rec.size;
    ++summary->layers;

    std::string mount_from;
    if (!rec.repository.empty() && rec.repository != repository &&
        rec.repository.substr(0, rec.repository.find('/')) == dest_host) {
      mount_from = rec.repository.substr(rec.repository.find('/') + 1);
    }
    if (!uploader.Push({ev, rec.digest, rec.path, mount_from})) return false;

    blockstore::Descriptor d;
    d.media_type = std::string(docker ? kDockerLayerTarMediaType : blockstore::kOciLayerMediaType);
    d.digest = rec.digest;
    d.size = static_cast<int64_t>(rec.size);
    d.annotations = src.annotations;
    d.annotations[std::string(kOverlaybdDigestAnnotation)] = rec.digest;
    d.annotations[std::string(kOverlaybdSizeAnnotation)] = absl::StrCat(rec.size);
    d.annotations[std::string(kOverlaybdVersionAnnotation)] = std::string(kOverlaybdVersion);
    if (!repository.empty()) d.annotations[std::string(kDadiRepositoryAnnotation)] = repository;
    layers.push_back(std::move(d));
    // Later layers are applied over the blob (instead of the sealed file, removed next).
    lower_paths[i] = rec.path;
    return true;
  };
  // The layer being compressed (staged conversion only): at most one at a time, finished
  // before any later layer.
  struct Pending {
    int index = 0;
    LayerEvent ev;
    std::string uuid;
    std::unique_ptr<BackgroundCompression> job;
  };
  std::optional<Pending> pending;
  // Waits for the pending compression and finishes its layer. Sets *pushed to false when the
  // uploader failed.
  auto finish_pending = [&](bool* pushed) -> absl::Status {
    *pushed = true;
    if (!pending) return absl::OkStatus();
    auto compressed = pending->job->Take();
    if (!compressed.ok()) return layer_error(pending->index, compressed.status());
    auto rec = store(pending->index, pending->uuid, *compressed);
    if (!rec.ok()) {
      ::unlink(compressed->blob_path.c_str());
      return rec.status();
    }
    *pushed = finish(pending->index, pending->ev, *rec, false);
    pending.reset();  // removes the sealed file
    return absl::OkStatus();
  };
  bool pushed = true;
  for (int i = 0; i < total && pushed; ++i) {
    const blockstore::Descriptor& src = manifest->layers[i];
    LayerEvent ev;
    ev.platform = platform;
    ev.index = i;
    ev.total = total;
    ev.source_digest = src.digest;
    ev.bytes_in = static_cast<uint64_t>(src.size);
    const std::string uuid = DeterministicUuid(absl::StrCat(chain_ids[i], "\n", options_key));

    std::optional<DedupRecord> hit_rec;
    if (db_ != nullptr) {
      auto hit = db_->Lookup(chain_ids[i], options_key);
      if (!hit.ok()) return hit.status();
      hit_rec = *hit;
    }
    lower_paths.emplace_back();
    if (hit_rec) {
      if (absl::Status s = finish_pending(&pushed); !s.ok()) return s;
      if (!pushed) break;
      ev.state = LayerEvent::kReused;
      pushed = finish(i, ev, *hit_rec, true);
      parent_uuid = uuid;
      continue;
    }
    ev.state = LayerEvent::kFetching;
    report(ev);
    if (prefetch_index != i) prefetch.reset();  // never two fetches at once
    auto tar = prefetch != nullptr ? prefetch->Take() : source.Blob(src.digest);
    prefetch.reset();
    prefetch_index = -1;
    if (!tar.ok()) return layer_error(i, tar.status());
    if (absl::Status s = start_prefetch(i + 1); !s.ok()) return s;
    ev.state = LayerEvent::kApplying;
    report(ev);
    std::string tmp = absl::StrCat(options_.store_dir, "/tmp-", uuid, "-", ::getpid());
    const std::vector<std::string> lowers(lower_paths.begin(), lower_paths.end() - 1);
    if (!staged) {
      auto converted = layer_converter_(**tar, lowers, uuid, parent_uuid, tmp, options_.layer);
      if (!converted.ok()) {
        ::unlink(tmp.c_str());
        return layer_error(i, converted.status());
      }
      auto rec = store(i, uuid, *converted);
      if (!rec.ok()) return rec.status();
      pushed = finish(i, ev, *rec, false);
      parent_uuid = uuid;
      continue;
    }
    // Staged: apply layer i (over layer i-1's sealed file while layer i-1 is compressed), then
    // finish layer i-1 and start compressing layer i.
    const std::string sealed = absl::StrCat(sealed_dir, "/sealed-", uuid, "-", ::getpid());
    absl::Status applied = staged_.apply(**tar, lowers, uuid, parent_uuid, sealed, options_.layer);
    tar->reset();
    if (!applied.ok()) {
      ::unlink(sealed.c_str());
      return layer_error(i, applied);
    }
    lower_paths[i] = sealed;
    parent_uuid = uuid;
    if (absl::Status s = finish_pending(&pushed); !s.ok()) {
      ::unlink(sealed.c_str());
      return s;
    }
    if (!pushed) {
      ::unlink(sealed.c_str());
      break;
    }
    pending.emplace();
    pending->index = i;
    pending->ev = ev;
    pending->uuid = uuid;
    pending->job = std::make_unique<BackgroundCompression>(staged_.compress, sealed, uuid, tmp,
                                                           options_.layer);
  }
  if (pushed) {
    if (absl::Status s = finish_pending(&pushed); !s.ok()) return s;
  }
  pending.reset();
  if (absl::Status s = uploader.Finish(); !s.ok()) return s;
  PushStats ps = uploader.stats();
  summary->pushes.uploaded += ps.uploaded;
  summary->pushes.already_existed += ps.already_existed;
  summary->pushes.mounted += ps.mounted;

  ojson diff = ojson::array();
  for (const auto& l : layers) diff.push_back(l.digest);
  config["rootfs"]["diff_ids"] = diff;
  std::string new_config = config.dump();
  std::string config_digest = blockstore::Sha256Digest(new_config);
  if (auto s = dest.PutSmallBlob(config_digest, new_config); !s.ok()) return s.status();

  blockstore::ImageManifest m = *manifest;
  m.config.digest = config_digest;
  m.config.size = static_cast<int64_t>(new_config.size());
  m.layers = std::move(layers);
  ManifestDocument out;
  out.media_type = doc.media_type;
  out.body = blockstore::SerializeImageManifest(m);
  out.digest = blockstore::Sha256Digest(out.body);
  return out;
}

// ---- progress ----

namespace {

const char* StateName(LayerEvent::State s) {
  switch (s) {
    case LayerEvent::kFetching:
      return "fetching";
    case LayerEvent::kApplying:
      return "applying";
    case LayerEvent::kReused:
      return "reused";
    case LayerEvent::kUploading:
      return "uploading";
    case LayerEvent::kDone:
      return "done";
  }
  return "?";
}

class PlainProgress : public ProgressSink {
 public:
  explicit PlainProgress(FILE* out) : out_(out) {}
  void OnLayer(const LayerEvent& e) override {
    std::string line =
        absl::StrFormat("%s%slayer %d/%d %s %s", e.platform, e.platform.empty() ? "" : " ",
                        e.index + 1, e.total, e.source_digest.substr(0, 19), StateName(e.state));
    if (e.state == LayerEvent::kDone || e.state == LayerEvent::kReused) {
      absl::StrAppendFormat(&line, " %d -> %d bytes", e.bytes_in, e.bytes_out);
    }
    if (!e.push_outcome.empty()) absl::StrAppend(&line, " (", e.push_outcome, ")");
    std::fprintf(out_, "%s\n", line.c_str());
    std::fflush(out_);
  }

 private:
  FILE* out_;
};

// One line per layer, redrawn by moving the cursor: a five-step bar (fetch, apply, upload,
// done; reused jumps to the end of apply).
class TerminalProgress : public ProgressSink {
 public:
  explicit TerminalProgress(FILE* out) : out_(out) {}
  void OnLayer(const LayerEvent& e) override {
    std::string key = absl::StrCat(e.platform, "#", e.index);
    auto it = std::find(keys_.begin(), keys_.end(), key);
    size_t row;
    if (it == keys_.end()) {
      keys_.push_back(key);
      row = keys_.size() - 1;
      std::fprintf(out_, "\n");
    } else {
      row = static_cast<size_t>(it - keys_.begin());
    }
    int step = e.state == LayerEvent::kFetching    ? 1
               : e.state == LayerEvent::kApplying  ? 2
               : e.state == LayerEvent::kReused    ? 3
               : e.state == LayerEvent::kUploading ? 3
                                                   : 5;
    std::string bar = std::string(step * 6, '#') + std::string((5 - step) * 6, '.');
    size_t up = keys_.size() - row;
    std::fprintf(out_, "\x1b[%zuA\r\x1b[2K%s%slayer %d/%d [%s] %-9s %s\x1b[%zuB\r", up,
                 e.platform.c_str(), e.platform.empty() ? "" : " ", e.index + 1, e.total,
                 bar.c_str(), StateName(e.state), e.push_outcome.c_str(), up);
    std::fflush(out_);
  }

 private:
  FILE* out_;
  std::vector<std::string> keys_;
};

}  // namespace

std::unique_ptr<ProgressSink> NewPlainProgress(FILE* out) {
  return std::make_unique<PlainProgress>(out);
}
std::unique_ptr<ProgressSink> NewTerminalProgress(FILE* out) {
  return std::make_unique<TerminalProgress>(out);
}

std::string PlatformString(const blockstore::Platform& p) {
  std::string s = absl::StrCat(p.os, "/", p.architecture);
  if (!p.variant.empty()) absl::StrAppend(&s, "/", p.variant);
  return s;
}

}  // namespace dadi::converter::image
