#include "tests/snapshotter/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace dadi::testing {

SnapshotterDaemon::SnapshotterDaemon(std::string root, std::string socket, std::string log_file)
    : root_(std::move(root)), socket_(std::move(socket)), log_file_(std::move(log_file)) {}

SnapshotterDaemon::~SnapshotterDaemon() {
  if (pid_ > 0) Kill();
}

absl::Status SnapshotterDaemon::Start(const std::vector<std::string>& extra_args) {
  if (pid_ > 0) return absl::FailedPreconditionError("already running");
  std::vector<std::string> args = {DADI_SNAPSHOTTER_BIN, "--root", root_, "--address", socket_,
                                   "--log-level",        "debug"};
  // No configuration file of the machine may leak in: point --config at an empty file.
  const std::string config = log_file_ + ".toml";
  std::ofstream(config).close();
  args.push_back("--config");
  args.push_back(config);
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(absl::StrCat("spawn ", argv[0], ": ", strerror(rc)));
  pid_ = pid;

  // Ready when the socket accepts a connection. The bound is generous: it only turns a hang
  // into a failure, it measures nothing.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          absl::StrCat("dadi-snapshotter exited at start (status ", status, "): ", Log()));
    }
    if (access(socket_.c_str(), F_OK) == 0) {
      auto channel = grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials());
      if (channel->WaitForConnected(std::chrono::system_clock::now() +
                                    std::chrono::milliseconds(200))) {
        return absl::OkStatus();
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  Kill();
  return absl::DeadlineExceededError("dadi-snapshotter did not start listening: " + Log());
}

absl::Status SnapshotterDaemon::Wait(int* exit_status) {
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return absl::InternalError(absl::StrCat("waitpid: ", strerror(errno)));
  }
  pid_ = -1;
  *exit_status = status;
  return absl::OkStatus();
}

absl::Status SnapshotterDaemon::Stop() {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  kill(pid_, SIGTERM);
  int status;
  if (absl::Status st = Wait(&status); !st.ok()) return st;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("dadi-snapshotter ended with status ", status));
  }
  return absl::OkStatus();
}

void SnapshotterDaemon::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  (void)Wait(&status);
}

absl::StatusOr<int> SnapshotterDaemon::WaitForExit() {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError("dadi-snapshotter did not exit");
}

std::unique_ptr<snapshots_pb::Snapshots::Stub> SnapshotterDaemon::Connect() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return snapshots_pb::Snapshots::NewStub(
      grpc::CreateCustomChannel("unix:" + socket_, grpc::InsecureChannelCredentials(), args));
}

std::string SnapshotterDaemon::Log() const {
  std::ifstream in(log_file_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

// containerd's compactLowerdirOption: the longest common prefix of the lower dirs, cut back
// to a directory (ids are digits: ".../snapshots/1" must become ".../snapshots/").
std::string CompactLowerdir(std::vector<std::string>* options) {
  for (std::string& opt : *options) {
    if (!absl::StartsWith(opt, "lowerdir=")) continue;
    std::vector<std::string> dirs = absl::StrSplit(opt.substr(9), ':');
    if (dirs.size() < 2) return "";
    std::string prefix = dirs[0];
    for (const std::string& d : dirs) {
      size_t n = 0;
      while (n < prefix.size() && n < d.size() && prefix[n] == d[n]) ++n;
      prefix.resize(n);
    }
    const size_t slash = prefix.rfind('/');
    if (slash == std::string::npos || slash == 0) return "";
    const std::string common = prefix.substr(0, slash + 1);
    for (std::string& d : dirs) d = d.substr(common.size());
    opt = "lowerdir=" + absl::StrJoin(dirs, ":");
    return common;
  }
  return "";
}

}  // namespace

absl::Status Mounter::Mount(
    const google::protobuf::RepeatedPtrField<containerd::types::Mount>& mounts,
    const std::string& target) {
  for (const auto& m : mounts) {
    std::vector<std::string> options(m.options().begin(), m.options().end());
    if (m.type() == "bind") {
      bool ro = false;
      for (const std::string& o : options) ro = ro || o == "ro";
      if (::mount(m.source().c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
        return Errno("bind " + m.source());
      }
      mounted_.push_back(target);
      if (ro && ::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY,
                        nullptr) != 0) {
        return Errno("remount ro " + target);
      }
    } else if (m.type() == "overlay") {
      std::string data = absl::StrJoin(options, ",");
      std::string chdir_to;
      if (data.size() >= static_cast<size_t>(sysconf(_SC_PAGESIZE)) - 512) {
        chdir_to = CompactLowerdir(&options);
        data = absl::StrJoin(options, ",");
      }
      if (chdir_to.empty()) {
        if (::mount("overlay", target.c_str(), "overlay", 0, data.c_str()) != 0) {
          return Errno("mount overlay " + data.substr(0, 200));
        }
      } else {
        // chdir is per process: mount from a child, as containerd re-executes itself.
        const pid_t child = fork();
        if (child < 0) return Errno("fork");
        if (child == 0) {
          if (::chdir(chdir_to.c_str()) != 0) _exit(100);
          _exit(::mount("overlay", target.c_str(), "overlay", 0, data.c_str()) == 0 ? 0 : errno);
        }
        int status = 0;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          return absl::InternalError(
              absl::StrCat("mount overlay from ", chdir_to, " (", data.size(),
                           " bytes of options): ", strerror(WEXITSTATUS(status))));
        }
      }
      mounted_.push_back(target);
    } else {
      return absl::UnimplementedError("mount type " + m.type());
    }
  }
  return absl::OkStatus();
}

absl::Status Mounter::Unmount(const std::string& target) {
  absl::Status result;
  for (auto it = mounted_.rbegin(); it != mounted_.rend();) {
    if (*it != target) {
      ++it;
      continue;
    }
    if (::umount2(target.c_str(), 0) != 0 && result.ok()) result = Errno("umount " + target);
    it = decltype(it)(mounted_.erase(std::next(it).base()));
  }
  return result;
}

Mounter::~Mounter() {
  for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it) {
    ::umount2(it->c_str(), MNT_DETACH);
  }
}

}  // namespace dadi::testing
