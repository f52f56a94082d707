// Shared fixtures of the chaos tests: three namespaces in a line joined by
// veths (client -- relay -- server), daemons run as child processes in their
// own process group, and small parsers for the relay's and the daemons'
// outputs. Everything is bounded in time and cleaned up by destructors, also
// when an assertion failed.
// Thread-safety: used from the test thread only (in_netns runs `fn` on a
// thread of its own and joins it).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include "hyperscsi/test_support/relay_report.h"
#include "hyperscsi/test_support/wait.h"

namespace hyperscsi::chaos {

// Runs a shell command, output discarded; true when it exited 0.
bool sh(const std::string& cmd);

// Three namespaces in a line: client (c0) -- (r0) relay (r1) -- (s0) server.
// Names are unique per process (hs<pid>...). The destructor deletes the
// namespaces, and with them the veths.
class ThreeNs {
 public:
  ThreeNs();
  ~ThreeNs();
  ThreeNs(const ThreeNs&) = delete;
  ThreeNs& operator=(const ThreeNs&) = delete;

  bool ok = false;
  std::string error;  // why set-up failed
  std::string client, relay, server, cli_if, relay_a, relay_b, srv_if;

 private:
  bool created_ = false;
};

// A program run through /bin/sh in its own process group, output to `log`.
// stop(): SIGTERM, then SIGKILL after 5 s; kill9(): SIGKILL at once. The
// destructor stops it.
class Proc {
 public:
  Proc() = default;
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  ~Proc() { stop(); }

  bool start(const std::string& cmd, const std::filesystem::path& log);
  bool alive() const;
  pid_t pid() const { return pid_; }
  // Returns the exit status (-1 if killed or not running).
  int stop();
  // Waits up to `bound` for the program to exit by itself, then stop()s it;
  // returns the exit status (-1 if it had to be stopped).
  int wait(std::chrono::milliseconds bound);
  void kill9();

 private:
  pid_t pid_ = -1;
};

std::string slurp(const std::filesystem::path& p);

using test_support::relay_stats;  // the relay's "a->b key=value ..." line for `dir`

// The first numeric value of "key": in `json` at or after `from` (-1 when absent).
int64_t json_int(const std::string& json, const std::string& key, size_t from = 0);

// How many session records `hyperscsi-target stats --json` lists.
int json_session_count(const std::string& stats_json);

// `hyperscsi-target stats --json` against `control` (empty string on failure).
std::string target_stats(const std::string& target_bin, const std::filesystem::path& control);

using test_support::wait_until;  // polls every 20 ms until it holds or the limit passed

// Runs `fn` on a thread that joined network namespace `ns`; sockets it opens
// stay in that namespace. False if the namespace could not be entered.
bool in_netns(const std::string& ns, const std::function<void()>& fn);

double seconds_since(std::chrono::steady_clock::time_point t0);

// CPU time (user + system, seconds) a process used so far; -1 if unknown.
double cpu_seconds(pid_t pid);

}  // namespace hyperscsi::chaos
