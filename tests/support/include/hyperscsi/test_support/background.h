// A shell command run in the background in its own process group, for tests
// that start the real daemons. Stopping signals the whole group (the command
// and anything it spawned): SIGTERM, up to 5 s of grace, then SIGKILL.
// Ownership: the object owns the process; the destructor stops it.
// Thread-safety: none; use from one thread.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace hyperscsi::test_support {

class BackgroundProcess {
 public:
  BackgroundProcess() = default;
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  ~BackgroundProcess() { stop(); }

  // Runs `sh -c "exec CMD"` with stdout and stderr to `log`; stops a previous one first.
  bool start(const std::string& cmd, const std::string& log) {
    stop();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >" + log + " 2>&1").c_str(), nullptr);
      ::_exit(127);
    }
    return pid_ > 0;
  }
  pid_t pid() const { return pid_; }
  bool alive() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 100 && ::waitpid(pid_, nullptr, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill9();
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace hyperscsi::test_support
