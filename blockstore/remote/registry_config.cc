#include "blockstore/remote/registry_config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "blockstore/remote/reference.h"

namespace dadi::blockstore {
namespace {

using nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("registry config: ", field, " ", what));
}

absl::Status GetBool(const json& o, const char* name, absl::string_view where, bool* dst) {
  auto it = o.find(name);
  if (it == o.end()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(absl::StrCat(where, ".", name), "is not a boolean");
  *dst = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetStr(const json& o, const char* name, absl::string_view where, std::string* dst) {
  auto it = o.find(name);
  if (it == o.end()) return absl::OkStatus();
  if (!it->is_string()) return Bad(absl::StrCat(where, ".", name), "is not a string");
  *dst = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetMillis(const json& o, const char* name, absl::string_view where,
                       absl::Duration* dst) {
  auto it = o.find(name);
  if (it == o.end()) return absl::OkStatus();
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > int64_t{86400} * 1000 * 365) {
    return Bad(absl::StrCat(where, ".", name), "is not a non-negative integer of milliseconds");
  }
  *dst = absl::Milliseconds(it->get<int64_t>());
  return absl::OkStatus();
}

}  // namespace

HostConfig RegistryConfig::Host(absl::string_view host) const {
  auto it = hosts.find(NormalizeRegistryHost(host));
  return it == hosts.end() ? HostConfig{} : it->second;
}

std::optional<Credentials> RegistryConfig::CredentialsFor(absl::string_view host) const {
  std::string h = NormalizeRegistryHost(host);
  auto it = hosts.find(h);
  if (it != hosts.end() && it->second.credentials && !it->second.credentials->empty()) {
    return it->second.credentials;
  }
  auto d = docker_credentials.find(h);
  if (d != docker_credentials.end()) return d->second;
  return std::nullopt;
}

absl::Status LoadDockerConfigFile(const std::string& path, RegistryConfig* config) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("docker config ", path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<std::map<std::string, Credentials>> creds = ParseDockerConfig(ss.str());
  if (!creds.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", creds.status().message()));
  }
  for (auto& [host, c] : *creds) config->docker_credentials[host] = std::move(c);
  return absl::OkStatus();
}

absl::StatusOr<RegistryConfig> ParseRegistryConfig(absl::string_view text) {
  if (text.size() > (1 << 20)) return Bad("document", "is larger than 1 MiB");
  json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return Bad("document", "is not a JSON object");
  RegistryConfig cfg;
  if (absl::Status s = GetStr(doc, "ca_file", "", &cfg.ca_file); !s.ok()) return s;
  if (absl::Status s = GetMillis(doc, "connect_timeout_ms", "", &cfg.connect_timeout); !s.ok())
    return s;
  if (absl::Status s = GetMillis(doc, "request_timeout_ms", "", &cfg.request_timeout); !s.ok())
    return s;
  if (absl::Status s = GetMillis(doc, "stall_timeout_ms", "", &cfg.stall_timeout); !s.ok())
    return s;
  if (auto r = doc.find("retry"); r != doc.end()) {
    if (!r->is_object()) return Bad("retry", "is not an object");
    if (auto m = r->find("max_attempts"); m != r->end()) {
      if (!m->is_number_integer() || m->get<int64_t>() < 1 || m->get<int64_t>() > 100) {
        return Bad("retry.max_attempts", "is not an integer in [1, 100]");
      }
      cfg.retry.max_attempts = static_cast<int>(m->get<int64_t>());
    }
    if (absl::Status s = GetMillis(*r, "initial_backoff_ms", "retry", &cfg.retry.initial_backoff);
        !s.ok())
      return s;
    if (absl::Status s = GetMillis(*r, "max_backoff_ms", "retry", &cfg.retry.max_backoff); !s.ok())
      return s;
  }
  if (auto h = doc.find("hosts"); h != doc.end()) {
    if (!h->is_object()) return Bad("hosts", "is not an object");
    for (auto it = h->begin(); it != h->end(); ++it) {
      std::string where = absl::StrCat("hosts[\"", it.key().substr(0, 100), "\"]");
      const json& o = it.value();
      if (!o.is_object()) return Bad(where, "is not an object");
      HostConfig hc;
      if (absl::Status s = GetBool(o, "plain_http", where, &hc.plain_http); !s.ok()) return s;
      if (absl::Status s = GetBool(o, "insecure_skip_verify", where, &hc.insecure_skip_verify);
          !s.ok())
        return s;
      if (absl::Status s = GetStr(o, "ca_file", where, &hc.ca_file); !s.ok()) return s;
      if (auto m = o.find("mirrors"); m != o.end()) {
        if (!m->is_array()) return Bad(absl::StrCat(where, ".mirrors"), "is not an array");
        for (const json& e : *m) {
          if (!e.is_string()) return Bad(absl::StrCat(where, ".mirrors"), "has a non-string");
          hc.mirrors.push_back(e.get<std::string>());
        }
      }
      Credentials c;
      if (absl::Status s = GetStr(o, "username", where, &c.username); !s.ok()) return s;
      if (absl::Status s = GetStr(o, "password", where, &c.password); !s.ok()) return s;
      if (!c.empty()) hc.credentials = std::move(c);
      cfg.hosts[NormalizeRegistryHost(it.key())] = std::move(hc);
    }
  }
  std::string docker_config;
  if (absl::Status s = GetStr(doc, "docker_config", "", &docker_config); !s.ok()) return s;
  if (!docker_config.empty()) {
    if (absl::Status s = LoadDockerConfigFile(docker_config, &cfg); !s.ok()) return s;
  }
  return cfg;
}

}  // namespace dadi::blockstore
