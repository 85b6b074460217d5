// Test servers for the registry client, all bound to 127.0.0.1 on free ports and torn down in
// their destructors (children killed and reaped, threads joined):
//   TestRegistry  the real docker-registry (distribution 2.8) with a generated config: plain or
//                 TLS (a generated CA), anonymous, htpasswd (Basic) or token auth
//   TokenServer   a token endpoint issuing RS256 JWTs the registry verifies
//   FaultProxy    a TCP proxy that injects faults per connection: resets, truncation, stalls,
//                 canned 503/429 answers
//   HttpServer    the small HTTP/1.1 server the token server is built on (also used to serve
//                 redirects, and blobs with ServeBlobRanges: multi-range answers of every shape)
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace dadi::testing {

// A port that was free a moment ago on 127.0.0.1.
int FreeLoopbackPort();

// Runs argv to completion (stdout and stderr to `log`); fails unless it exits 0.
absl::Status RunCommand(const std::vector<std::string>& argv, const std::string& log);

// A child process killed (SIGTERM, then SIGKILL) and reaped on destruction.
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv,
                                                             const std::string& log);
  ~ChildProcess();
  int pid() const { return pid_; }

 private:
  explicit ChildProcess(int pid) : pid_(pid) {}
  int pid_;
};

// Generated CA and a server certificate for 127.0.0.1 signed by it.
struct TestPki {
  std::string ca_cert, server_cert, server_key;
  static absl::StatusOr<TestPki> Generate(const std::string& dir);
};

struct TestRegistryOptions {
  bool tls = false;           // uses TestPki generated in the directory
  std::string htpasswd_user;  // non-empty: Basic auth with this user
  std::string htpasswd_password;
  // Token auth: the token server's realm URL, service, issuer and signing certificate.
  std::string token_realm, token_service, token_issuer, token_cert;
};

class TestRegistry {
 public:
  // Starts docker-registry with its storage and config in `dir` and waits until it answers.
  static absl::StatusOr<std::unique_ptr<TestRegistry>> Start(const std::string& dir,
                                                             const TestRegistryOptions& options);
  ~TestRegistry();
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  const TestPki& pki() const { return pki_; }

 private:
  TestRegistry() = default;
  int port_ = 0;
  TestPki pki_;
  std::unique_ptr<ChildProcess> process_;
};

// Listens on a free 127.0.0.1 port and hands every accepted connection to `handler` on a thread
// of its own. The destructor raises the stop flag the handlers were given (so they give up
// waiting), joins every thread and closes the socket. The servers below hold their acceptor as
// their last member, so it is torn down before the state its handlers use.
class LoopbackAcceptor {
 public:
  // Owns `fd` (closes it); returns soon after `stop` is raised.
  using ConnectionHandler = std::function<void(int fd, const std::atomic<bool>& stop)>;
  // `server` names the caller in the error when no port can be bound.
  static absl::StatusOr<std::unique_ptr<LoopbackAcceptor>> Start(const std::string& server,
                                                                 ConnectionHandler handler);
  ~LoopbackAcceptor();
  int port() const { return port_; }

 private:
  LoopbackAcceptor() = default;
  void AcceptLoop();
  ConnectionHandler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
};

struct HttpServerRequest {
  std::string method, target, path;
  std::multimap<std::string, std::string> query;  // decoded
  std::map<std::string, std::string> headers;     // lowercase names
  std::string body;
};
struct HttpServerResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpServerResponse(const HttpServerRequest&)>;
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Handler handler);
  ~HttpServer();
  int port() const { return acceptor_->port(); }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port()); }
  int requests() const { return requests_.load(); }

 private:
  HttpServer() = default;
  void Serve(int fd, const std::atomic<bool>& stop);
  Handler handler_;
  std::atomic<int> requests_{0};
  std::unique_ptr<LoopbackAcceptor> acceptor_;  // last: stopped before the members above go
};

// How ServeBlobRanges answers a GET whose Range asks for several ranges (a single range is
// always answered with a 206 of exactly that range, as docker-registry does).
enum class MultiRangeMode {
  kMultipart,          // 206 multipart/byteranges, one part per range (Go's http.ServeContent)
  kMultipartReversed,  // the same, parts in reverse order, a quoted boundary, a preamble
  kMultipartDropLast,  // the same without the last range's part
  kCoalesce,           // 206, one part from the first range's start to the last one's end
  kFirstRangeOnly,     // 206, one part: the first range only
  kWholeBlob,          // 200 with the whole blob (Range ignored, as S3 does for several ranges)
};

// Answers a GET of `blob` (as a registry's blob endpoint or a storage URL would): 200 without
// Range, 206 for `Range: bytes=a-b[,c-d...]` as `mode` says, 416 for a malformed or
// unsatisfiable Range.
HttpServerResponse ServeBlobRanges(const HttpServerRequest& req, const std::string& blob,
                                   MultiRangeMode mode);

class TokenServer {
 public:
  // Issues tokens signed with a generated key whose self-signed certificate (cert_path()) the
  // registry trusts. With users, requests must carry valid Basic credentials (else 401);
  // anonymous requests get pull access only when allow_anonymous_pull.
  static absl::StatusOr<std::unique_ptr<TokenServer>> Start(
      const std::string& dir, std::map<std::string, std::string> users, bool allow_anonymous_pull,
      int expires_in_seconds = 300);
  std::string realm() const { return http_->base() + "/token"; }
  const std::string& cert_path() const { return cert_path_; }
  static constexpr const char* kService = "dadi-test-registry";
  static constexpr const char* kIssuer = "dadi-test-issuer";
  int token_requests() const { return token_requests_.load(); }
  ~TokenServer();

 private:
  TokenServer() = default;
  HttpServerResponse Handle(const HttpServerRequest& req);
  std::map<std::string, std::string> users_;
  bool allow_anonymous_pull_ = false;
  int expires_in_ = 300;
  std::string cert_path_;
  std::string cert_der_b64_;
  void* pkey_ = nullptr;  // EVP_PKEY*
  std::atomic<int> token_requests_{0};
  std::unique_ptr<HttpServer> http_;
};

// What the proxy does to one connection.
struct Fault {
  enum Kind {
    kPass,      // relay both ways
    kReset,     // relay; after `after_bytes` response bytes, reset the connection (RST)
    kTruncate,  // relay; after `after_bytes` response bytes, close cleanly (FIN)
    kStall,     // read the request, answer nothing, hold the connection open
    kRespond,   // read the request headers, answer `response` verbatim, close
  };
  Kind kind = kPass;
  size_t after_bytes = 0;
  std::string response;
  static Fault Reset(size_t after_bytes);
  static Fault Truncate(size_t after_bytes);
  static Fault Stall();
  // kRespond with an HTTP error `code` and a JSON error body.
  static Fault Status(int code, const std::string& extra_headers = "");
};

class FaultProxy {
 public:
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(int upstream_port);
  ~FaultProxy();
  int port() const { return acceptor_->port(); }
  std::string host() const { return "127.0.0.1:" + std::to_string(port()); }
  // Faults for the next connections, in order; later connections pass.
  void Push(Fault fault);
  void Clear();
  int connections() const { return connections_.load(); }

 private:
  FaultProxy() = default;
  void Handle(int client, const std::atomic<bool>& stop);
  int upstream_port_ = 0;
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::deque<Fault> faults_;
  std::unique_ptr<LoopbackAcceptor> acceptor_;  // last: stopped before the members above go
};

}  // namespace dadi::testing
