// Small helpers for tests that run programs: a private temporary directory,
// whether a command exists, running a shell command for its output, and
// reading a file whole.
// Thread-safety: plain functions and a value type, used from the test thread.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

namespace hyperscsi::test_support {

// A private temporary directory (mkdtemp), removed with everything in it.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "hs_test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Empty when the directory could not be made.
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// True when `name` is a command on PATH.
bool have_command(std::string_view name);

// Runs `cmd` with /bin/sh; returns its stdout and exit status (-1 if it did
// not exit normally or could not start).
std::pair<std::string, int> run_command(const std::string& cmd);

struct RunResult {
  int status = -1;  // exit status (timeout(1) gives 124)
  std::string out;  // stdout and stderr
};
// Runs `cmd` with /bin/sh under timeout(1), killed after `limit_s` seconds;
// stderr is merged into `out`.
RunResult run_bounded(const std::string& cmd, int limit_s = 30);

// The whole file, or empty when it cannot be read (for failure messages).
std::string read_text_file(const std::filesystem::path& p);

}  // namespace hyperscsi::test_support
