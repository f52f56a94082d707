#include "hyperscsi/test_support/process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <system_error>

namespace hyperscsi::test_support {

namespace fs = std::filesystem;

TempDir::TempDir(std::string_view prefix) {
  std::string tmpl = (fs::temp_directory_path() /
                      (std::string(prefix) + "_" + std::to_string(::getpid()) + "_XXXXXX"))
                         .string();
  if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

bool have_command(std::string_view name) {
  return std::system(("command -v " + std::string(name) + " >/dev/null 2>&1").c_str()) == 0;
}

std::pair<std::string, int> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {out, -1};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

RunResult run_bounded(const std::string& cmd, int limit_s) {
  auto [out, status] = run_command("timeout -k 2 " + std::to_string(limit_s) + " " + cmd + " 2>&1");
  return RunResult{status, std::move(out)};
}

std::string read_text_file(const std::filesystem::path& p) {
  std::string text;
  if (FILE* f = std::fopen(p.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  return text;
}

bool mentions_tag(std::string_view text, std::string_view tag) {
  if (tag.empty()) return false;
  for (size_t at = text.find(tag); at != std::string_view::npos; at = text.find(tag, at + 1)) {
    const size_t next = at + tag.size();
    if (next == text.size() || text[next] < '0' || text[next] > '9') return true;
  }
  return false;
}

}  // namespace hyperscsi::test_support
