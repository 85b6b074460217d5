#include "tests/remote/test_servers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "blockstore/remote/auth.h"

extern char** environ;

namespace dadi::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) return absl::InternalError("cannot write " + path);
  return absl::OkStatus();
}

absl::StatusOr<int> SpawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(absl::StrCat("spawn ", argv[0], ": ", strerror(rc)));
  return pid;
}

int ListenLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0) {
    ::close(fd);
    return -1;
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

int ConnectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads until the end of the request headers (or 64 KiB, EOF, stop, 10 s).
bool ReadHeaders(int fd, std::string* buf, const std::atomic<bool>& stop) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (buf->find("\r\n\r\n") == std::string::npos) {
    if (stop || buf->size() > 65536 || std::chrono::steady_clock::now() > deadline) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char tmp[4096];
    ssize_t r = ::recv(fd, tmp, sizeof(tmp), 0);
    if (r <= 0) return false;
    buf->append(tmp, static_cast<size_t>(r));
  }
  return true;
}

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    int v = 0;
    if (s[i] == '%' && i + 2 < s.size() && absl::SimpleHexAtoi(s.substr(i + 1, 2), &v)) {
      out.push_back(static_cast<char>(v));
      i += 2;
      continue;
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

std::string Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 302:
      return "Found";
    case 307:
      return "Temporary Redirect";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 429:
      return "Too Many Requests";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

std::string Base64Url(absl::string_view data) {
  std::string s = blockstore::Base64Encode(data);
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

}  // namespace

int FreeLoopbackPort() {
  int port = 0;
  int fd = ListenLoopback(&port);
  if (fd >= 0) ::close(fd);
  return port;
}

absl::Status RunCommand(const std::vector<std::string>& argv, const std::string& log) {
  absl::StatusOr<int> pid = SpawnLogged(argv, log);
  if (!pid.ok()) return pid.status();
  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), " failed: ", ReadFile(log)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv, const std::string& log) {
  absl::StatusOr<int> pid = SpawnLogged(argv, log);
  if (!pid.ok()) return pid.status();
  return std::unique_ptr<ChildProcess>(new ChildProcess(*pid));
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) return;
    ::usleep(100 * 1000);
  }
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
}

absl::StatusOr<TestPki> TestPki::Generate(const std::string& dir) {
  TestPki pki;
  pki.ca_cert = dir + "/ca.pem";
  pki.server_cert = dir + "/server.pem";
  pki.server_key = dir + "/server.key";
  std::string log = dir + "/openssl.log";
  std::string ext = dir + "/server.ext";
  if (absl::Status s = WriteFile(ext,
                                 "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "basicConstraints=CA:FALSE\n"
                                 "keyUsage=digitalSignature,keyEncipherment\n"
                                 "extendedKeyUsage=serverAuth\n");
      !s.ok())
    return s;
  std::vector<std::vector<std::string>> cmds = {
      {"openssl",
       "req",
       "-x509",
       "-newkey",
       "ec",
       "-pkeyopt",
       "ec_paramgen_curve:prime256v1",
       "-nodes",
       "-keyout",
       dir + "/ca.key",
       "-out",
       pki.ca_cert,
       "-days",
       "2",
       "-subj",
       "/CN=dadi-test-ca",
       "-addext",
       "basicConstraints=critical,CA:TRUE",
       "-addext",
       "keyUsage=critical,keyCertSign,cRLSign"},
      {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", pki.server_key, "-out", dir + "/server.csr", "-subj", "/CN=127.0.0.1"},
      {"openssl", "x509", "-req", "-in", dir + "/server.csr", "-CA", pki.ca_cert, "-CAkey",
       dir + "/ca.key", "-CAcreateserial", "-out", pki.server_cert, "-days", "2", "-extfile", ext}};
  for (const auto& c : cmds) {
    if (absl::Status s = RunCommand(c, log); !s.ok()) return s;
  }
  return pki;
}

absl::StatusOr<std::unique_ptr<TestRegistry>> TestRegistry::Start(
    const std::string& dir, const TestRegistryOptions& options) {
  std::unique_ptr<TestRegistry> reg(new TestRegistry());
  reg->port_ = FreeLoopbackPort();
  std::string config = absl::StrCat(
      "version: 0.1\n"
      "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
      "storage:\n  filesystem:\n    rootdirectory: ",
      dir, "/storage\n",
      "  delete:\n    enabled: true\n"
      "http:\n  addr: 127.0.0.1:",
      reg->port_, "\n  secret: dadi-test-secret\n");
  if (options.tls) {
    absl::StatusOr<TestPki> pki = TestPki::Generate(dir);
    if (!pki.ok()) return pki.status();
    reg->pki_ = *pki;
    absl::StrAppend(&config, "  tls:\n    certificate: ", pki->server_cert,
                    "\n    key: ", pki->server_key, "\n");
  }
  if (!options.htpasswd_user.empty()) {
    std::string htpasswd = dir + "/htpasswd";
    if (absl::Status s = RunCommand(
            {"htpasswd", "-Bbn", options.htpasswd_user, options.htpasswd_password}, htpasswd);
        !s.ok())
      return s;
    absl::StrAppend(&config, "auth:\n  htpasswd:\n    realm: dadi-test\n    path: ", htpasswd,
                    "\n");
  } else if (!options.token_realm.empty()) {
    absl::StrAppend(&config, "auth:\n  token:\n    realm: ", options.token_realm,
                    "\n    service: ", options.token_service,
                    "\n    issuer: ", options.token_issuer,
                    "\n    rootcertbundle: ", options.token_cert, "\n");
  }
  std::string config_path = dir + "/registry.yml";
  if (absl::Status s = WriteFile(config_path, config); !s.ok()) return s;
  std::string log = dir + "/registry.log";
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Spawn({"docker-registry", "serve", config_path}, log);
  if (!child.ok()) return child.status();
  reg->process_ = std::move(*child);
  for (int i = 0; i < 200; ++i) {
    int status;
    if (::waitpid(reg->process_->pid(), &status, WNOHANG) == reg->process_->pid()) {
      return absl::InternalError("docker-registry exited: " + ReadFile(log));
    }
    int fd = ConnectLoopback(reg->port_);
    if (fd >= 0) {
      ::close(fd);
      return reg;
    }
    ::usleep(50 * 1000);
  }
  return absl::DeadlineExceededError("docker-registry did not listen within 10 s: " +
                                     ReadFile(log));
}

TestRegistry::~TestRegistry() = default;

// ---------------------------------------------------------------------------------------------
// LoopbackAcceptor

absl::StatusOr<std::unique_ptr<LoopbackAcceptor>> LoopbackAcceptor::Start(
    const std::string& server, ConnectionHandler handler) {
  std::unique_ptr<LoopbackAcceptor> a(new LoopbackAcceptor());
  a->handler_ = std::move(handler);
  a->listen_fd_ = ListenLoopback(&a->port_);
  if (a->listen_fd_ < 0) return absl::InternalError(server + ": cannot listen");
  a->acceptor_ = std::thread([self = a.get()] { self->AcceptLoop(); });
  return a;
}

void LoopbackAcceptor::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(mu_);
    workers_.emplace_back([this, fd] { handler_(fd, stop_); });
  }
}

LoopbackAcceptor::~LoopbackAcceptor() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.swap(workers_);
  }
  for (std::thread& t : workers) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

// ---------------------------------------------------------------------------------------------
// HttpServer

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Handler handler) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->handler_ = std::move(handler);
  auto acceptor = LoopbackAcceptor::Start(
      "HttpServer",
      [self = s.get()](int fd, const std::atomic<bool>& stop) { self->Serve(fd, stop); });
  if (!acceptor.ok()) return acceptor.status();
  s->acceptor_ = std::move(*acceptor);
  return s;
}

HttpServer::~HttpServer() = default;

void HttpServer::Serve(int fd, const std::atomic<bool>& stop) {
  std::string buf;
  if (!ReadHeaders(fd, &buf, stop)) {
    ::close(fd);
    return;
  }
  size_t end = buf.find("\r\n\r\n");
  HttpServerRequest req;
  std::vector<std::string> lines = absl::StrSplit(buf.substr(0, end), "\r\n");
  std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
  if (first.size() >= 2) {
    req.method = first[0];
    req.target = first[1];
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    req.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  size_t q = req.target.find('?');
  req.path = req.target.substr(0, q);
  if (q != std::string::npos) {
    for (absl::string_view kv : absl::StrSplit(req.target.substr(q + 1), '&')) {
      size_t eq = kv.find('=');
      req.query.emplace(PercentDecode(kv.substr(0, eq)),
                        eq == absl::string_view::npos ? "" : PercentDecode(kv.substr(eq + 1)));
    }
  }
  req.body = buf.substr(end + 4);
  auto cl = req.headers.find("content-length");
  size_t want = 0;
  if (cl != req.headers.end() && absl::SimpleAtoi(cl->second, &want) && want <= (16 << 20)) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (req.body.size() < want && !stop && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char tmp[16384];
      ssize_t r = ::recv(fd, tmp, sizeof(tmp), 0);
      if (r <= 0) break;
      req.body.append(tmp, static_cast<size_t>(r));
    }
  }
  requests_++;
  HttpServerResponse resp = handler_(req);
  std::string out =
      absl::StrCat("HTTP/1.1 ", resp.status, " ", Reason(resp.status),
                   "\r\nContent-Length: ", resp.body.size(), "\r\nConnection: close\r\n");
  for (const auto& [k, v] : resp.headers) absl::StrAppend(&out, k, ": ", v, "\r\n");
  absl::StrAppend(&out, "\r\n", resp.body);
  WriteAll(fd, out.data(), out.size());
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

// ---------------------------------------------------------------------------------------------
// ServeBlobRanges

HttpServerResponse ServeBlobRanges(const HttpServerRequest& req, const std::string& blob,
                                   MultiRangeMode mode) {
  auto it = req.headers.find("range");
  if (it == req.headers.end()) return {200, {}, blob};
  const HttpServerResponse unsatisfiable{
      416, {{"Content-Range", absl::StrCat("bytes */", blob.size())}}, ""};
  absl::string_view spec = it->second;
  if (!absl::ConsumePrefix(&spec, "bytes=")) return unsatisfiable;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // first, last (inclusive)
  for (absl::string_view one : absl::StrSplit(spec, ',')) {
    one = absl::StripAsciiWhitespace(one);
    size_t dash = one.find('-');
    uint64_t first = 0, last = blob.size() - 1;
    if (dash == absl::string_view::npos || !absl::SimpleAtoi(one.substr(0, dash), &first) ||
        (dash + 1 < one.size() && !absl::SimpleAtoi(one.substr(dash + 1), &last)) || last < first ||
        first >= blob.size()) {
      return unsatisfiable;
    }
    ranges.emplace_back(first, std::min<uint64_t>(last, blob.size() - 1));
  }
  auto single = [&](uint64_t first, uint64_t last) -> HttpServerResponse {
    return {206,
            {{"Content-Range", absl::StrCat("bytes ", first, "-", last, "/", blob.size())},
             {"Content-Type", "application/octet-stream"}},
            blob.substr(first, last - first + 1)};
  };
  if (ranges.size() == 1) return single(ranges[0].first, ranges[0].second);
  switch (mode) {
    case MultiRangeMode::kWholeBlob:
      return {200, {}, blob};
    case MultiRangeMode::kFirstRangeOnly:
      return single(ranges.front().first, ranges.front().second);
    case MultiRangeMode::kCoalesce:
      return single(ranges.front().first, ranges.back().second);
    case MultiRangeMode::kMultipart:
    case MultiRangeMode::kMultipartReversed:
    case MultiRangeMode::kMultipartDropLast:
      break;
  }
  const bool reversed = mode == MultiRangeMode::kMultipartReversed;
  const std::string boundary = reversed ? "dadi test boundary" : "3d6b6a416f9b5";
  std::string body;
  if (reversed) {
    std::reverse(ranges.begin(), ranges.end());
    body = "This is the preamble.\r\n";
  }
  if (mode == MultiRangeMode::kMultipartDropLast) ranges.pop_back();
  for (const auto& [first, last] : ranges) {
    absl::StrAppend(&body, "--", boundary, "\r\nContent-Range: bytes ", first, "-", last, "/",
                    blob.size(), "\r\nContent-Type: application/octet-stream\r\n\r\n",
                    absl::string_view(blob).substr(first, last - first + 1), "\r\n");
  }
  absl::StrAppend(&body, "--", boundary, "--\r\n");
  return {
      206,
      {{"Content-Type", reversed ? absl::StrCat("multipart/byteranges; boundary=\"", boundary, "\"")
                                 : absl::StrCat("multipart/byteranges; boundary=", boundary)}},
      std::move(body)};
}

// ---------------------------------------------------------------------------------------------
// TokenServer

absl::StatusOr<std::unique_ptr<TokenServer>> TokenServer::Start(
    const std::string& dir, std::map<std::string, std::string> users, bool allow_anonymous_pull,
    int expires_in_seconds) {
  std::unique_ptr<TokenServer> ts(new TokenServer());
  ts->users_ = std::move(users);
  ts->allow_anonymous_pull_ = allow_anonymous_pull;
  ts->expires_in_ = expires_in_seconds;
  ts->cert_path_ = dir + "/token.pem";
  std::string key_path = dir + "/token.key";
  if (absl::Status s = RunCommand(
          {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key_path, "-out",
           ts->cert_path_, "-days", "2", "-subj", "/CN=dadi-test-token"},
          dir + "/openssl-token.log");
      !s.ok())
    return s;
  FILE* kf = std::fopen(key_path.c_str(), "r");
  if (kf == nullptr) return absl::InternalError("cannot open " + key_path);
  ts->pkey_ = PEM_read_PrivateKey(kf, nullptr, nullptr, nullptr);
  std::fclose(kf);
  FILE* cf = std::fopen(ts->cert_path_.c_str(), "r");
  if (cf == nullptr) return absl::InternalError("cannot open " + ts->cert_path_);
  X509* cert = PEM_read_X509(cf, nullptr, nullptr, nullptr);
  std::fclose(cf);
  if (ts->pkey_ == nullptr || cert == nullptr) return absl::InternalError("bad token key/cert");
  unsigned char* der = nullptr;
  int der_len = i2d_X509(cert, &der);
  ts->cert_der_b64_ =
      blockstore::Base64Encode(absl::string_view(reinterpret_cast<char*>(der), der_len));
  OPENSSL_free(der);
  X509_free(cert);
  TokenServer* self = ts.get();
  absl::StatusOr<std::unique_ptr<HttpServer>> http =
      HttpServer::Start([self](const HttpServerRequest& r) { return self->Handle(r); });
  if (!http.ok()) return http.status();
  ts->http_ = std::move(*http);
  return ts;
}

TokenServer::~TokenServer() {
  http_.reset();
  EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_));
}

HttpServerResponse TokenServer::Handle(const HttpServerRequest& req) {
  if (req.path != "/token") return {404, {}, "not found"};
  token_requests_++;
  std::string user;
  auto auth = req.headers.find("authorization");
  if (auth != req.headers.end()) {
    absl::string_view v = auth->second;
    if (!absl::ConsumePrefix(&v, "Basic ")) return {401, {}, "{\"details\":\"bad scheme\"}"};
    absl::StatusOr<std::string> decoded = blockstore::Base64Decode(v);
    if (!decoded.ok()) return {401, {}, "{}"};
    size_t colon = decoded->find(':');
    std::string u = decoded->substr(0, colon);
    std::string p = colon == std::string::npos ? "" : decoded->substr(colon + 1);
    auto it = users_.find(u);
    if (it == users_.end() || it->second != p) return {401, {}, "{\"details\":\"bad creds\"}"};
    user = u;
  } else if (!allow_anonymous_pull_ && !users_.empty()) {
    return {401, {}, "{\"details\":\"credentials required\"}"};
  }
  nlohmann::json access = nlohmann::json::array();
  auto range = req.query.equal_range("scope");
  for (auto it = range.first; it != range.second; ++it) {
    std::vector<std::string> parts = absl::StrSplit(it->second, ':');
    if (parts.size() != 3) continue;
    std::vector<std::string> actions = absl::StrSplit(parts[2], ',');
    if (user.empty()) {
      actions.erase(std::remove_if(actions.begin(), actions.end(),
                                   [](const std::string& a) { return a != "pull"; }),
                    actions.end());
    }
    access.push_back({{"type", parts[0]}, {"name", parts[1]}, {"actions", actions}});
  }
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  static std::atomic<int> jti{0};
  nlohmann::json header = {{"typ", "JWT"}, {"alg", "RS256"}, {"x5c", {cert_der_b64_}}};
  nlohmann::json claims = {{"iss", kIssuer},
                           {"sub", user},
                           {"aud", req.query.count("service") ? req.query.find("service")->second
                                                              : std::string(kService)},
                           {"exp", now + expires_in_},
                           {"nbf", now - 10},
                           {"iat", now - 10},
                           {"jti", absl::StrCat("dadi-", jti++)},
                           {"access", access}};
  std::string signing_input = absl::StrCat(Base64Url(header.dump()), ".", Base64Url(claims.dump()));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t sig_len = 0;
  std::string sig;
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY*>(pkey_));
  EVP_DigestSign(ctx, nullptr, &sig_len,
                 reinterpret_cast<const unsigned char*>(signing_input.data()),
                 signing_input.size());
  sig.resize(sig_len);
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                 reinterpret_cast<const unsigned char*>(signing_input.data()),
                 signing_input.size());
  sig.resize(sig_len);
  EVP_MD_CTX_free(ctx);
  std::string token = absl::StrCat(signing_input, ".", Base64Url(sig));
  nlohmann::json body = {{"token", token}, {"expires_in", expires_in_}};
  return {200, {{"Content-Type", "application/json"}}, body.dump()};
}

// ---------------------------------------------------------------------------------------------
// FaultProxy

Fault Fault::Reset(size_t after_bytes) {
  Fault f;
  f.kind = kReset;
  f.after_bytes = after_bytes;
  return f;
}

Fault Fault::Truncate(size_t after_bytes) {
  Fault f;
  f.kind = kTruncate;
  f.after_bytes = after_bytes;
  return f;
}

Fault Fault::Stall() {
  Fault f;
  f.kind = kStall;
  return f;
}

Fault Fault::Status(int code, const std::string& extra_headers) {
  Fault f;
  f.kind = kRespond;
  std::string body =
      absl::StrCat("{\"errors\":[{\"code\":\"INJECTED\",\"message\":\"fault ", code, "\"}]}");
  f.response = absl::StrCat("HTTP/1.1 ", code, " ", Reason(code),
                            "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                            "\r\nConnection: close\r\n", extra_headers, "\r\n", body);
  return f;
}

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(int upstream_port) {
  std::unique_ptr<FaultProxy> p(new FaultProxy());
  p->upstream_port_ = upstream_port;
  auto acceptor = LoopbackAcceptor::Start("FaultProxy",
                                          [self = p.get()](int fd, const std::atomic<bool>& stop) {
                                            self->connections_++;
                                            self->Handle(fd, stop);
                                          });
  if (!acceptor.ok()) return acceptor.status();
  p->acceptor_ = std::move(*acceptor);
  return p;
}

FaultProxy::~FaultProxy() = default;

void FaultProxy::Push(Fault fault) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.push_back(std::move(fault));
}

void FaultProxy::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.clear();
}

void FaultProxy::Handle(int client, const std::atomic<bool>& stop) {
  Fault fault;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!faults_.empty()) {
      fault = faults_.front();
      faults_.pop_front();
    }
  }
  if (fault.kind == Fault::kRespond || fault.kind == Fault::kStall) {
    std::string buf;
    ReadHeaders(client, &buf, stop);
    if (fault.kind == Fault::kRespond) {
      WriteAll(client, fault.response.data(), fault.response.size());
      ::shutdown(client, SHUT_WR);
    } else {
      // Hold the connection open, answering nothing, until the client gives up.
      while (!stop) {
        pollfd p{client, POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) {
          char tmp[4096];
          if (::recv(client, tmp, sizeof(tmp), 0) <= 0) break;
        }
      }
    }
    ::close(client);
    return;
  }
  int upstream = ConnectLoopback(upstream_port_);
  if (upstream < 0) {
    ::close(client);
    return;
  }
  size_t response_bytes = 0;
  bool cut = false;
  while (!stop && !cut) {
    pollfd p[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    char tmp[16384];
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = ::recv(client, tmp, sizeof(tmp), 0);
      if (r <= 0 || !WriteAll(upstream, tmp, static_cast<size_t>(r))) break;
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = ::recv(upstream, tmp, sizeof(tmp), 0);
      if (r <= 0) break;
      size_t n = static_cast<size_t>(r);
      if (fault.kind != Fault::kPass && response_bytes + n >= fault.after_bytes) {
        n = fault.after_bytes - response_bytes;
        cut = true;
      }
      if (!WriteAll(client, tmp, n)) break;
      response_bytes += n;
    }
  }
  if (cut && fault.kind == Fault::kReset) {
    linger l{1, 0};  // close() sends RST
    ::setsockopt(client, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ::close(client);
  ::close(upstream);
}

}  // namespace dadi::testing
