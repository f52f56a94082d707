// State files of attached LUNs: one key=value file per FUSE directory in the
// run directory, written by the attach daemon (refreshed every second with
// its counters) and read by detach, list and stats; removed when the
// attachment ends, also when attaching failed. Also the attach daemons' log
// and the run-directory lock that makes "is this LUN attached already?"
// and registering an attachment one step.
// Thread-safety: free functions; AttachLog::write from any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hyperscsi::attach {

using StateMap = std::map<std::string, std::string>;

// $HYPERSCSI_RUN_DIR or /run/hyperscsi-attach.
std::string run_dir();
// Absolute, normalised path of `dir` without touching it (a dead FUSE mount
// cannot be stat'ed).
std::string absolute_path(const std::string& dir);
std::string state_path(const std::string& abs_dir);

bool write_state(const std::string& path, const StateMap& state);  // atomic (rename)
std::optional<StateMap> read_state(const std::string& path);
std::vector<std::string> list_states();  // paths of every state file
bool pid_alive(int pid);
// Removes an attachment's state file (and a leftover temporary of it).
void remove_state(const std::string& path);

// Held while an attach checks for a duplicate and registers its state:
// flock on <run dir>/attach.lock. Released by the destructor.
class RunDirLock {
 public:
  RunDirLock();
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;
  bool locked() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// <run dir>/attach.log: one log for every attach daemon (lines carry the
// pid and the FUSE directory), so nothing piles up per attachment.
std::string log_path();

// True when our standard error is the journal's stream (systemd sets
// JOURNAL_STREAM to its device:inode for a service's stdout/stderr).
bool stderr_is_journal();

// The attach daemon's log: appends "TIME hyperscsi-attach[PID] DIR: LEVEL:
// TEXT" lines to log_path() (rotated to .1 past 1 MiB at open) and, when
// given, to the journal ("<PRIORITY>TEXT", which journald parses) and/or
// standard error. Each line is one write(2): safe from several threads.
class AttachLog {
 public:
  enum class Level { kInfo = 6, kWarning = 4, kError = 3 };  // syslog priorities

  // `journal_fd`: a stream to journald or -1; `echo_fd`: another fd to print
  // plain lines to (the terminal in the foreground) or -1. Not owned.
  bool open(const std::string& dir, int journal_fd, int echo_fd);
  ~AttachLog();
  void write(Level level, const std::string& text) const;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  int journal_fd_ = -1;
  int echo_fd_ = -1;
  std::string dir_;
};

}  // namespace hyperscsi::attach
