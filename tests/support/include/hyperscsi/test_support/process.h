// Small helpers for tests that run programs: a private temporary directory,
// whether a command exists, running a shell command for its output, reading
// a file whole, and finding a script run's tag in what it may have left.
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

// True when `text` holds `tag` not followed by another digit. The bench
// scripts name what they make by a prefix and their pid ("hsl4711s"), so a
// run beside this one ("hsl47110s") is not taken for this run's leftover.
bool mentions_tag(std::string_view text, std::string_view tag);

}  // namespace hyperscsi::test_support
