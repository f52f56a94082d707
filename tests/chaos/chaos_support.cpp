#include "chaos_support.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "hyperscsi/test_support/process.h"

namespace hyperscsi::chaos {

namespace fs = std::filesystem;
using test_support::run_command;

bool sh(const std::string& cmd) {
  return run_command(cmd + " >/dev/null 2>&1").second == 0;
}

ThreeNs::ThreeNs() {
  const std::string p = "hs" + std::to_string(::getpid());
  client = p + "c";
  relay = p + "r";
  server = p + "s";
  cli_if = p + "c0";
  relay_a = p + "r0";
  relay_b = p + "r1";
  srv_if = p + "s0";
  for (const auto* ns : {&client, &relay, &server}) {
    if (!sh("ip netns add " + *ns)) {
      error = "ip netns add " + *ns + " failed";
      return;
    }
    created_ = true;
  }
  if (!sh("ip link add " + cli_if + " netns " + client + " type veth peer name " + relay_a +
          " netns " + relay) ||
      !sh("ip link add " + relay_b + " netns " + relay + " type veth peer name " + srv_if +
          " netns " + server)) {
    error = "ip link add veth failed";
    return;
  }
  const std::pair<const std::string*, const std::string*> ifs[] = {
      {&client, &cli_if}, {&relay, &relay_a}, {&relay, &relay_b}, {&server, &srv_if}};
  for (const auto& [ns, dev] : ifs)
    if (!sh("ip -n " + *ns + " link set " + *dev + " mtu 9000 up")) {
      error = "ip link set " + *dev + " up failed";
      return;
    }
  ok = true;
}

ThreeNs::~ThreeNs() {
  if (!created_) return;
  for (const auto* ns : {&client, &relay, &server}) sh("ip netns del " + *ns);
}

bool Proc::start(const std::string& cmd, const fs::path& log) {
  pid_ = ::fork();
  if (pid_ == 0) {
    ::setpgid(0, 0);
    const std::string full = "exec " + cmd + " >>" + log.string() + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", full.c_str(), nullptr);
    _exit(127);
  }
  if (pid_ > 0) ::setpgid(pid_, pid_);  // also here: no race with kill(-pid)
  return pid_ > 0;
}

bool Proc::alive() const {
  return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0;
}

int Proc::stop() {
  if (pid_ <= 0) return -1;
  ::kill(-pid_, SIGTERM);
  int status = 0;
  pid_t r = 0;
  for (int i = 0; i < 100 && (r = ::waitpid(pid_, &status, WNOHANG)) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (r == 0) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  return r > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int Proc::wait(std::chrono::milliseconds bound) {
  if (pid_ <= 0) return -1;
  const auto end = std::chrono::steady_clock::now() + bound;
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop();
  return -1;
}

void Proc::kill9() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t json_int(const std::string& json, const std::string& key, size_t from) {
  const size_t k = json.find("\"" + key + "\":", from);
  if (k == std::string::npos) return -1;
  try {
    return std::stoll(json.substr(k + key.size() + 3));
  } catch (...) {
    return -1;
  }
}

int json_session_count(const std::string& stats_json) {
  int n = 0;
  for (size_t at = stats_json.find("\"session_id\":"); at != std::string::npos;
       at = stats_json.find("\"session_id\":", at + 1))
    ++n;
  return n;
}

std::string target_stats(const std::string& target_bin, const fs::path& control) {
  auto [out, status] = run_command("timeout 5 " + target_bin + " stats --json --control " +
                                   control.string() + " 2>/dev/null");
  return status == 0 ? out : std::string();
}

bool in_netns(const std::string& ns, const std::function<void()>& fn) {
  bool entered = false;
  std::thread t([&] {
    const int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    entered = ::setns(fd, CLONE_NEWNET) == 0;  // this thread only
    ::close(fd);
    if (entered) fn();
  });
  t.join();
  return entered;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double cpu_seconds(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  // Fields after the command name (which may hold spaces) start after ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace hyperscsi::chaos
