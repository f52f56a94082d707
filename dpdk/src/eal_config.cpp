#include "eal_config.h"

#include <charconv>

#include "hyperscsi/dpdk/dpdk_port.h"

namespace hyperscsi::dpdk {
namespace {

// A bare option that takes its value from the next argument ("-a X", "--vdev X").
bool awaits_value(const std::string& arg) {
  static constexpr std::string_view kWithValue[] = {"-a",
                                                    "-b",
                                                    "-c",
                                                    "-l",
                                                    "-n",
                                                    "-r",
                                                    "-w",
                                                    "-d",
                                                    "-m",
                                                    "--vdev",
                                                    "--allow",
                                                    "--block",
                                                    "--lcores",
                                                    "--file-prefix",
                                                    "--log-level",
                                                    "--socket-mem",
                                                    "--iova-mode",
                                                    "--proc-type",
                                                    "--main-lcore",
                                                    "--huge-dir",
                                                    "--base-virtaddr",
                                                    "--socket-limit"};
  for (std::string_view opt : kWithValue)
    if (arg == opt) return true;
  return false;
}

std::string_view device_name(std::string_view devargs) {
  return devargs.substr(0, devargs.find(','));
}

// Value of key=... inside a devargs list "name,k1=v1,k2=v2".
std::optional<std::string> devarg(std::string_view devargs, std::string_view key) {
  size_t pos = devargs.find(',');
  while (pos != std::string_view::npos) {
    const size_t start = pos + 1;
    const size_t next = devargs.find(',', start);
    std::string_view kv =
        devargs.substr(start, next == std::string_view::npos ? next : next - start);
    if (kv.size() > key.size() && kv.substr(0, key.size()) == key && kv[key.size()] == '=')
      return std::string(kv.substr(key.size() + 1));
    pos = next;
  }
  return std::nullopt;
}

bool starts_with_any(std::string_view s, std::initializer_list<std::string_view> prefixes) {
  for (std::string_view p : prefixes)
    if (s.starts_with(p)) return true;
  return false;
}

}  // namespace

std::vector<std::string> split_eal_args(std::string_view eal_args) {
  std::vector<std::string> out;
  bool value_pending = false;  // previous argument is a bare option awaiting its value
  size_t pos = 0;
  while (pos <= eal_args.size()) {
    size_t comma = eal_args.find(',', pos);
    if (comma == std::string_view::npos) comma = eal_args.size();
    std::string element(eal_args.substr(pos, comma - pos));
    pos = comma + 1;
    if (element.empty()) continue;
    if (element[0] == '-' || out.empty() || value_pending) {
      out.push_back(element);
      value_pending = element[0] == '-' && awaits_value(element);
    } else {
      out.back() += ',';
      out.back() += element;
    }
  }
  return out;
}

Result<EalConfig, io::PortError> parse_eal_config(std::string_view eal_args) {
  EalConfig cfg;
  const std::vector<std::string> args = split_eal_args(eal_args);
  if (args.empty())
    return Unexpected(io::PortError{
        io::PortErrorKind::kBadSpec,
        "dpdk: empty EAL argument list (e.g. dpdk:--vdev=net_af_packet0,iface=eth1)"});
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.starts_with("--hs-mtu=")) {
      std::string_view v = std::string_view(a).substr(9);
      size_t mtu = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), mtu);
      if (ec != std::errc() || end != v.data() + v.size() || mtu < 68 || mtu > 65000)
        return Unexpected(
            io::PortError{io::PortErrorKind::kBadSpec,
                          "dpdk: bad --hs-mtu value '" + std::string(v) + "' (68..65000)"});
      cfg.mtu = mtu;
      continue;
    }
    cfg.eal_args.push_back(a);
    if (a == "--no-huge") cfg.no_huge = true;
    if (a == "--in-memory") cfg.in_memory = true;

    // A device: "--vdev=X", "--vdev X", "-aX", "-a X", "--allow=X", "--allow X".
    std::optional<std::string_view> dev;
    std::string_view sv(a);
    if ((sv == "--vdev" || sv == "-a" || sv == "--allow" || sv == "-w") && i + 1 < args.size()) {
      dev = args[i + 1];
    } else if (sv.starts_with("--vdev=") || sv.starts_with("--allow=")) {
      dev = sv.substr(sv.find('=') + 1);
    } else if ((sv.starts_with("-a") || sv.starts_with("-w")) && sv.size() > 2 && sv[1] != '-') {
      dev = sv.substr(2);
    }
    if (!dev) continue;
    const std::string_view name = device_name(*dev);
    cfg.devices.emplace_back(name);
    if (starts_with_any(name, {"net_af_packet", "eth_af_packet"})) {
      auto iface = devarg(*dev, "iface");
      if (!iface)
        return Unexpected(
            io::PortError{io::PortErrorKind::kBadSpec,
                          "dpdk: vdev " + std::string(name) + " needs iface=<interface>"});
      VdevInterface v{std::string(name), *iface};
      if (auto fs = devarg(*dev, "framesz")) {
        auto [end, ec] = std::from_chars(fs->data(), fs->data() + fs->size(), v.frame_size);
        if (ec != std::errc() || end != fs->data() + fs->size())
          return Unexpected(
              io::PortError{io::PortErrorKind::kBadSpec,
                            "dpdk: vdev " + std::string(name) + ": bad framesz '" + *fs + "'"});
      }
      cfg.af_packet.push_back(std::move(v));
    }
    if (starts_with_any(name, {"net_memif", "eth_memif"})) cfg.uses_memif = true;
  }
  return cfg;
}

}  // namespace hyperscsi::dpdk
