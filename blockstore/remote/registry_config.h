// How dadi reaches registries: per-host transport (TLS, CA, plain HTTP), mirrors, credentials,
// timeouts and retry policy. Built in code or loaded from dadi's JSON registry config.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "blockstore/remote/auth.h"

namespace dadi::blockstore {

struct RetryPolicy {
  int max_attempts = 5;  // total tries of one request, >= 1
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  // A Retry-After longer than this is capped (a registry asking for minutes would stall reads).
  absl::Duration max_retry_after = absl::Seconds(30);
};

struct HostConfig {
  // Endpoints tried before the origin for pulls, in order, e.g. "https://mirror.local:5000" or
  // "http://127.0.0.1:65001". Each mirror's own transport settings and credentials come from
  // its HostConfig entry (keyed by its host[:port]).
  std::vector<std::string> mirrors;
  bool plain_http = false;            // talk HTTP instead of HTTPS
  bool insecure_skip_verify = false;  // TLS without verifying the certificate
  std::string ca_file;                // extra CA bundle (PEM) for this host
  std::optional<Credentials> credentials;
};

struct RegistryConfig {
  std::map<std::string, HostConfig> hosts;  // keyed by normalised host[:port]
  // Credentials from a docker config.json, used when a host has none of its own.
  std::map<std::string, Credentials> docker_credentials;
  std::string ca_file;  // CA bundle for all hosts; empty: the system bundle
  absl::Duration connect_timeout = absl::Seconds(10);
  // One request (headers and body) must finish within this; range reads are small.
  absl::Duration request_timeout = absl::Seconds(60);
  // A transfer slower than 1 KiB/s for this long is aborted (stall detection).
  absl::Duration stall_timeout = absl::Seconds(20);
  RetryPolicy retry;
  std::string user_agent = "dadi/0.1";

  // The host's settings (a default HostConfig when unconfigured).
  HostConfig Host(absl::string_view host) const;
  // Credentials for a host: its own, else the docker config's; std::nullopt for anonymous.
  std::optional<Credentials> CredentialsFor(absl::string_view host) const;
};

// Parses dadi's registry config (JSON):
//   {"ca_file": "...", "docker_config": "/root/.docker/config.json",
//    "connect_timeout_ms": 10000, "request_timeout_ms": 60000, "stall_timeout_ms": 20000,
//    "retry": {"max_attempts": 5, "initial_backoff_ms": 200, "max_backoff_ms": 10000},
//    "hosts": {"docker.io": {"mirrors": ["https://m.local"], "plain_http": false,
//              "insecure_skip_verify": false, "ca_file": "...",
//              "username": "...", "password": "..."}}}
// "docker_config" names a file that is read and merged into docker_credentials.
absl::StatusOr<RegistryConfig> ParseRegistryConfig(absl::string_view json);

// Reads a docker config.json file into `config.docker_credentials`.
absl::Status LoadDockerConfigFile(const std::string& path, RegistryConfig* config);

}  // namespace dadi::blockstore
