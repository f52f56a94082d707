#include "sys_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace hyperscsi::bench {
namespace {

std::optional<uint64_t> read_number(const std::string& path) {
  std::ifstream in(path);
  uint64_t v = 0;
  if (!(in >> v)) return std::nullopt;
  return v;
}

// "voluntary_ctxt_switches:\t12" lines of /proc/PID/task/TID/status.
uint64_t switches_from_status(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  uint64_t total = 0;
  while (std::getline(in, line)) {
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
        line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
      std::istringstream fields(line.substr(line.find(':') + 1));
      uint64_t v = 0;
      if (fields >> v) total += v;
    }
  }
  return total;
}

}  // namespace

ProcessSample sample_self() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  ProcessSample s;
  s.cpu_seconds = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  s.context_switches = uint64_t(ru.ru_nvcsw + ru.ru_nivcsw);
  return s;
}

std::optional<ProcessSample> sample_process(int pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  std::ifstream stat(base + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return std::nullopt;
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  uint64_t utime = 0, stime = 0;
  // Field 3 (state) is the first after ')'; utime and stime are fields 14 and 15.
  for (int n = 3; n <= 15 && fields >> field; ++n) {
    if (n == 14) utime = std::stoull(field);
    if (n == 15) stime = std::stoull(field);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  ProcessSample s;
  s.cpu_seconds = double(utime + stime) / double(ticks > 0 ? ticks : 100);
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(base + "/task", ec))
    s.context_switches += switches_from_status(task.path().string() + "/status");
  return s;
}

std::optional<InterfaceSample> sample_interface(const std::string& iface) {
  const std::string base = "/sys/class/net/" + iface + "/statistics/";
  auto tx = read_number(base + "tx_packets");
  auto rx = read_number(base + "rx_packets");
  if (!tx || !rx) return std::nullopt;
  return InterfaceSample{*tx, *rx};
}

}  // namespace hyperscsi::bench
