#include "blockstore/remote/manifest.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "blockstore/remote/digest.h"

namespace dadi::blockstore {
namespace {

using nlohmann::json;

constexpr size_t kMaxEntries = 10000;

absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("manifest: ", where, ": ", what));
}

absl::StatusOr<json> ParseJsonObject(absl::string_view text, absl::string_view what) {
  if (text.size() > kMaxManifestBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", text.size(), " bytes is too large (max ", kMaxManifestBytes, ")"));
  }
  json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  if (!doc.is_object())
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a JSON object"));
  return doc;
}

// Optional string field: absent or null leaves `dst` empty.
absl::Status GetString(const json& obj, const char* name, absl::string_view where,
                       std::string* dst) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return Bad(absl::StrCat(where, ".", name), "is not a string");
  *dst = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetStringMap(const json& obj, const char* name, absl::string_view where,
                          std::map<std::string, std::string>* dst) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Bad(absl::StrCat(where, ".", name), "is not an object");
  if (it->size() > kMaxEntries) return Bad(absl::StrCat(where, ".", name), "too many entries");
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (!kv.value().is_string()) {
      return Bad(absl::StrCat(where, ".", name, "[\"", kv.key().substr(0, 100), "\"]"),
                 "is not a string");
    }
    (*dst)[kv.key()] = kv.value().get<std::string>();
  }
  return absl::OkStatus();
}

absl::Status GetStringList(const json& obj, const char* name, absl::string_view where,
                           std::vector<std::string>* dst) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return Bad(absl::StrCat(where, ".", name), "is not an array");
  if (it->size() > kMaxEntries) return Bad(absl::StrCat(where, ".", name), "too many entries");
  for (const json& v : *it) {
    if (!v.is_string()) return Bad(absl::StrCat(where, ".", name), "has a non-string element");
    dst->push_back(v.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status CheckSchemaVersion(const json& doc) {
  auto it = doc.find("schemaVersion");
  if (it == doc.end()) return Bad("schemaVersion", "is missing");
  if (!it->is_number_integer() || it->get<int64_t>() != 2) {
    return Bad("schemaVersion", "is not 2 (schema 1 manifests are not supported)");
  }
  return absl::OkStatus();
}

absl::StatusOr<Descriptor> ParseDescriptor(const json& v, const std::string& where) {
  if (!v.is_object()) return Bad(where, "is not an object");
  Descriptor d;
  if (absl::Status s = GetString(v, "mediaType", where, &d.media_type); !s.ok()) return s;
  if (absl::Status s = GetString(v, "digest", where, &d.digest); !s.ok()) return s;
  if (absl::Status s = GetString(v, "artifactType", where, &d.artifact_type); !s.ok()) return s;
  if (d.digest.empty()) return Bad(absl::StrCat(where, ".digest"), "is missing");
  if (!IsValidDigest(d.digest)) return Bad(absl::StrCat(where, ".digest"), "is not a valid digest");
  auto size = v.find("size");
  if (size == v.end()) return Bad(absl::StrCat(where, ".size"), "is missing");
  if (!size->is_number_integer()) return Bad(absl::StrCat(where, ".size"), "is not an integer");
  if (size->is_number_unsigned()) {
    uint64_t u = size->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return Bad(absl::StrCat(where, ".size"), "too large");
    d.size = static_cast<int64_t>(u);
  } else {
    d.size = size->get<int64_t>();
  }
  if (d.size < 0) return Bad(absl::StrCat(where, ".size"), "is negative");
  if (absl::Status s = GetStringList(v, "urls", where, &d.urls); !s.ok()) return s;
  if (absl::Status s = GetStringMap(v, "annotations", where, &d.annotations); !s.ok()) return s;
  auto plat = v.find("platform");
  if (plat != v.end() && !plat->is_null()) {
    std::string pw = absl::StrCat(where, ".platform");
    if (!plat->is_object()) return Bad(pw, "is not an object");
    Platform p;
    if (absl::Status s = GetString(*plat, "architecture", pw, &p.architecture); !s.ok()) return s;
    if (absl::Status s = GetString(*plat, "os", pw, &p.os); !s.ok()) return s;
    if (absl::Status s = GetString(*plat, "variant", pw, &p.variant); !s.ok()) return s;
    if (absl::Status s = GetString(*plat, "os.version", pw, &p.os_version); !s.ok()) return s;
    if (absl::Status s = GetStringList(*plat, "os.features", pw, &p.os_features); !s.ok()) return s;
    d.platform = std::move(p);
  }
  return d;
}

json DescriptorJson(const Descriptor& d) {
  json j = json::object();
  if (!d.media_type.empty()) j["mediaType"] = d.media_type;
  if (!d.artifact_type.empty()) j["artifactType"] = d.artifact_type;
  j["digest"] = d.digest;
  j["size"] = d.size;
  if (!d.urls.empty()) j["urls"] = d.urls;
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (d.platform) {
    json p = json::object();
    p["architecture"] = d.platform->architecture;
    p["os"] = d.platform->os;
    if (!d.platform->os_version.empty()) p["os.version"] = d.platform->os_version;
    if (!d.platform->os_features.empty()) p["os.features"] = d.platform->os_features;
    if (!d.platform->variant.empty()) p["variant"] = d.platform->variant;
    j["platform"] = std::move(p);
  }
  return j;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string PlatformString(const Platform& p) {
  std::string s = absl::StrCat(p.os, "/", p.architecture);
  if (!p.variant.empty()) absl::StrAppend(&s, "/", p.variant);
  return s;
}

}  // namespace

std::string ManifestAcceptHeader() {
  return absl::StrCat(kOciManifestMediaType, ", ", kOciIndexMediaType, ", ",
                      kDockerManifestMediaType, ", ", kDockerManifestListMediaType);
}

bool IsIndexMediaType(absl::string_view media_type) {
  return media_type == kOciIndexMediaType || media_type == kDockerManifestListMediaType;
}

bool IsManifestMediaType(absl::string_view media_type) {
  return media_type == kOciManifestMediaType || media_type == kDockerManifestMediaType;
}

Platform HostPlatform() {
  Platform p;
  p.os = "linux";
#if defined(__x86_64__)
  p.architecture = "amd64";
#elif defined(__aarch64__)
  p.architecture = "arm64";
  p.variant = "v8";
#elif defined(__i386__)
  p.architecture = "386";
#elif defined(__powerpc64__)
  p.architecture = "ppc64le";
#elif defined(__s390x__)
  p.architecture = "s390x";
#elif defined(__riscv)
  p.architecture = "riscv64";
#else
  p.architecture = "unknown";
#endif
  return p;
}

absl::StatusOr<std::string> DetectManifestMediaType(absl::string_view json_text,
                                                    absl::string_view content_type) {
  absl::string_view ct = content_type;
  size_t semi = ct.find(';');
  if (semi != absl::string_view::npos) ct = ct.substr(0, semi);
  ct = absl::StripAsciiWhitespace(ct);
  if (IsIndexMediaType(ct) || IsManifestMediaType(ct)) return std::string(ct);
  absl::StatusOr<json> doc = ParseJsonObject(json_text, "manifest");
  if (!doc.ok()) return doc.status();
  std::string mt;
  if (absl::Status s = GetString(*doc, "mediaType", "manifest", &mt); !s.ok()) return s;
  if (IsIndexMediaType(mt) || IsManifestMediaType(mt)) return mt;
  if (!mt.empty()) return Bad("mediaType", absl::StrCat("unsupported \"", mt.substr(0, 200), "\""));
  if (doc->contains("manifests")) return std::string(kOciIndexMediaType);
  if (doc->contains("config") || doc->contains("layers")) return std::string(kOciManifestMediaType);
  return absl::InvalidArgumentError("manifest: cannot tell a manifest from an index");
}

absl::StatusOr<ImageManifest> ParseImageManifest(absl::string_view text) {
  absl::StatusOr<json> doc = ParseJsonObject(text, "manifest");
  if (!doc.ok()) return doc.status();
  if (absl::Status s = CheckSchemaVersion(*doc); !s.ok()) return s;
  ImageManifest m;
  if (absl::Status s = GetString(*doc, "mediaType", "manifest", &m.media_type); !s.ok()) return s;
  if (!m.media_type.empty() && !IsManifestMediaType(m.media_type)) {
    return Bad("mediaType",
               absl::StrCat("\"", m.media_type.substr(0, 200), "\" is not an image manifest type"));
  }
  if (absl::Status s = GetString(*doc, "artifactType", "manifest", &m.artifact_type); !s.ok())
    return s;
  auto config = doc->find("config");
  if (config == doc->end()) return Bad("config", "is missing");
  absl::StatusOr<Descriptor> cd = ParseDescriptor(*config, "config");
  if (!cd.ok()) return cd.status();
  m.config = std::move(*cd);
  auto layers = doc->find("layers");
  if (layers != doc->end() && !layers->is_null()) {
    if (!layers->is_array()) return Bad("layers", "is not an array");
    if (layers->size() > kMaxEntries) return Bad("layers", "too many entries");
    for (size_t i = 0; i < layers->size(); ++i) {
      absl::StatusOr<Descriptor> d = ParseDescriptor((*layers)[i], absl::StrCat("layers[", i, "]"));
      if (!d.ok()) return d.status();
      m.layers.push_back(std::move(*d));
    }
  }
  auto subject = doc->find("subject");
  if (subject != doc->end() && !subject->is_null()) {
    absl::StatusOr<Descriptor> d = ParseDescriptor(*subject, "subject");
    if (!d.ok()) return d.status();
    m.subject = std::move(*d);
  }
  if (absl::Status s = GetStringMap(*doc, "annotations", "manifest", &m.annotations); !s.ok())
    return s;
  return m;
}

absl::StatusOr<ImageIndex> ParseImageIndex(absl::string_view text) {
  absl::StatusOr<json> doc = ParseJsonObject(text, "index");
  if (!doc.ok()) return doc.status();
  if (absl::Status s = CheckSchemaVersion(*doc); !s.ok()) return s;
  ImageIndex idx;
  if (absl::Status s = GetString(*doc, "mediaType", "index", &idx.media_type); !s.ok()) return s;
  if (!idx.media_type.empty() && !IsIndexMediaType(idx.media_type)) {
    return Bad("mediaType",
               absl::StrCat("\"", idx.media_type.substr(0, 200), "\" is not an index type"));
  }
  auto manifests = doc->find("manifests");
  if (manifests == doc->end()) return Bad("manifests", "is missing");
  if (!manifests->is_array()) return Bad("manifests", "is not an array");
  if (manifests->size() > kMaxEntries) return Bad("manifests", "too many entries");
  for (size_t i = 0; i < manifests->size(); ++i) {
    absl::StatusOr<Descriptor> d =
        ParseDescriptor((*manifests)[i], absl::StrCat("manifests[", i, "]"));
    if (!d.ok()) return d.status();
    idx.manifests.push_back(std::move(*d));
  }
  if (absl::Status s = GetStringMap(*doc, "annotations", "index", &idx.annotations); !s.ok())
    return s;
  return idx;
}

std::string SerializeImageManifest(const ImageManifest& m) {
  json j = json::object();
  j["schemaVersion"] = m.schema_version;
  if (!m.media_type.empty()) j["mediaType"] = m.media_type;
  if (!m.artifact_type.empty()) j["artifactType"] = m.artifact_type;
  j["config"] = DescriptorJson(m.config);
  json layers = json::array();
  for (const Descriptor& d : m.layers) layers.push_back(DescriptorJson(d));
  j["layers"] = std::move(layers);
  if (m.subject) j["subject"] = DescriptorJson(*m.subject);
  if (!m.annotations.empty()) j["annotations"] = m.annotations;
  return Dump(j);
}

std::string SerializeImageIndex(const ImageIndex& idx) {
  json j = json::object();
  j["schemaVersion"] = idx.schema_version;
  if (!idx.media_type.empty()) j["mediaType"] = idx.media_type;
  json ms = json::array();
  for (const Descriptor& d : idx.manifests) ms.push_back(DescriptorJson(d));
  j["manifests"] = std::move(ms);
  if (!idx.annotations.empty()) j["annotations"] = idx.annotations;
  return Dump(j);
}

std::string DescribeRegistryErrors(absl::string_view body) {
  if (body.empty() || body.size() > (1 << 20)) return "";
  json doc = json::parse(body.begin(), body.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return "";
  auto errors = doc.find("errors");
  if (errors == doc.end() || !errors->is_array()) return "";
  std::string out;
  size_t shown = 0;
  for (const json& e : *errors) {
    if (!e.is_object()) continue;
    if (shown == 3) {
      absl::StrAppend(&out, "; ...");
      break;
    }
    std::string code, message;
    if (auto c = e.find("code"); c != e.end() && c->is_string()) code = c->get<std::string>();
    if (auto m = e.find("message"); m != e.end() && m->is_string()) {
      message = m->get<std::string>();
    }
    if (!out.empty()) absl::StrAppend(&out, "; ");
    absl::StrAppend(&out, code.substr(0, 64), code.empty() ? "" : ": ", message.substr(0, 200));
    ++shown;
  }
  return out;
}

absl::StatusOr<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want) {
  const Descriptor* loose = nullptr;
  std::vector<std::string> seen;
  for (const Descriptor& d : index.manifests) {
    if (!d.platform) continue;
    seen.push_back(PlatformString(*d.platform));
    if (d.platform->os != want.os || d.platform->architecture != want.architecture) continue;
    if (d.platform->variant == want.variant) return d;
    if (loose == nullptr && (d.platform->variant.empty() || want.variant.empty())) loose = &d;
  }
  if (loose != nullptr) return *loose;
  return absl::NotFoundError(
      absl::StrCat("index has no manifest for platform ", PlatformString(want),
                   " (has: ", seen.empty() ? "none" : absl::StrJoin(seen, ", "), ")"));
}

}  // namespace dadi::blockstore
