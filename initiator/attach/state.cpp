#include "state.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
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

}  // namespace hyperscsi::attach
