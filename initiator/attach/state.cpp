#include "state.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace hyperscsi::attach {

std::string run_dir() {
  const char* env = std::getenv("HYPERSCSI_RUN_DIR");
  return env && *env ? env : "/run/hyperscsi-attach";
}

std::string absolute_path(const std::string& dir) {
  std::filesystem::path p(dir);
  if (p.is_relative()) p = std::filesystem::current_path() / p;
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string state_path(const std::string& abs_dir) {
  std::string name;
  for (char c : abs_dir) name.push_back(c == '/' ? '_' : c);
  return run_dir() + "/" + name + ".state";
}

bool write_state(const std::string& path, const StateMap& state) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return false;
    for (const auto& [k, v] : state) out << k << '=' << v << '\n';
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::optional<StateMap> read_state(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  StateMap m;
  std::string line;
  int lines = 0;
  while (std::getline(in, line) && ++lines < 1000) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

std::vector<std::string> list_states() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(run_dir(), ec)) {
    if (e.path().extension() == ".state") out.push_back(e.path().string());
  }
  return out;
}

bool pid_alive(int pid) {
  return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

void remove_state(const std::string& path) {
  std::remove(path.c_str());
  std::remove((path + ".tmp").c_str());
}

RunDirLock::RunDirLock() {
  std::error_code ec;
  std::filesystem::create_directories(run_dir(), ec);
  fd_ = ::open((run_dir() + "/attach.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

std::string log_path() {
  return run_dir() + "/attach.log";
}

bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (!env || !*env) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(env, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  return ::fstat(2, &st) == 0 && static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

bool AttachLog::open(const std::string& dir, int journal_fd, int echo_fd) {
  dir_ = dir;
  journal_fd_ = journal_fd;
  echo_fd_ = echo_fd;
  std::error_code ec;
  std::filesystem::create_directories(run_dir(), ec);
  const std::string path = log_path();
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && st.st_size > (1 << 20))
    std::rename(path.c_str(), (path + ".1").c_str());
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  return fd_ >= 0;
}

AttachLog::~AttachLog() {
  if (fd_ >= 0) ::close(fd_);
}

void AttachLog::write(Level level, const std::string& text) const {
  const char* name = level == Level::kError     ? "error"
                     : level == Level::kWarning ? "warning"
                                                : "info";
  if (fd_ >= 0) {
    char stamp[40] = {};
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S%z", &tm);
    const std::string line = std::string(stamp) + " hyperscsi-attach[" +
                             std::to_string(::getpid()) + "] " + dir_ + ": " + name + ": " + text +
                             "\n";
    [[maybe_unused]] ssize_t n = ::write(fd_, line.data(), line.size());
  }
  if (journal_fd_ >= 0) {
    const std::string line =
        "<" + std::to_string(static_cast<int>(level)) + ">" + dir_ + ": " + text + "\n";
    [[maybe_unused]] ssize_t n = ::write(journal_fd_, line.data(), line.size());
  }
  if (echo_fd_ >= 0) {
    const std::string line = std::string("hyperscsi-attach: ") + name + ": " + text + "\n";
    [[maybe_unused]] ssize_t n = ::write(echo_fd_, line.data(), line.size());
  }
}

}  // namespace hyperscsi::attach
