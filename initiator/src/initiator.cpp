// The public Initiator: error and result texts, opening ports and creating
// an Initiator over them, and the calls that forward to Initiator::Impl
// (initiator_impl.h: the loop, the command table, recovery...).
//
// Thread-safety: as initiator.h states; this file holds no state of its own.
#include <algorithm>

#include "hyperscsi/ports/open_port.h"
#include "initiator_impl.h"

namespace hyperscsi::initiator {

std::string_view to_string(ErrorKind k) {
  switch (k) {
    case ErrorKind::kInterfaceAbsent:
      return "interface absent";
    case ErrorKind::kNotRoot:
      return "not root";
    case ErrorKind::kPort:
      return "port error";
    case ErrorKind::kNoTarget:
      return "no target answers";
    case ErrorKind::kLunAbsent:
      return "LUN absent";
    case ErrorKind::kAccessDenied:
      return "access denied";
    case ErrorKind::kMtuMismatch:
      return "MTU mismatch";
    case ErrorKind::kLoginRejected:
      return "login rejected";
    case ErrorKind::kNotConnected:
      return "not connected";
    case ErrorKind::kScsi:
      return "SCSI error";
    case ErrorKind::kCommandFailed:
      return "command failed";
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
  }
  return "?";
}

std::string_view to_string(CompletionError e) {
  switch (e) {
    case CompletionError::kNone:
      return "none";
    case CompletionError::kDeadTime:
      return "dead time expired";
    case CompletionError::kShutdown:
      return "initiator shut down";
    case CompletionError::kInvalid:
      return "invalid command";
    case CompletionError::kTargetFailure:
      return "target failure";
    case CompletionError::kIdentityMismatch:
      return "LUN fenced";
  }
  return "?";
}

uint32_t command_headroom(size_t cdb_length) {
  return static_cast<uint32_t>(proto::kCommandHeaderFixedSize + cdb_length);
}

std::string CommandResult::describe() const {
  if (error != CompletionError::kNone) {
    std::string s(to_string(error));
    if (!message.empty()) s += ": " + message;
    return s;
  }
  std::string s(scsi::status_name(status));
  if (status == 0x02) s += ": " + scsi::describe_sense(sense);
  return s;
}

// --- Initiator ---

Initiator::Initiator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Initiator::~Initiator() = default;

std::vector<std::string> split_port_list(std::string_view list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    if (comma > start) out.emplace_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

namespace {
Result<std::unique_ptr<io::Port>, Error> open_one_port(std::string_view port_spec) {
  auto port = ports::open_port(port_spec);
  if (!port) {
    const io::PortError& e = port.error();
    switch (e.kind) {
      case io::PortErrorKind::kNoSuchInterface:
        return Unexpected{Error{ErrorKind::kInterfaceAbsent, "interface absent: " + e.message}};
      case io::PortErrorKind::kPermission:
        return Unexpected{
            Error{ErrorKind::kNotRoot, "not root: opening " + std::string(port_spec) +
                                           " needs root (CAP_NET_RAW): " + e.message}};
      default:
        return Unexpected{Error{ErrorKind::kPort,
                                "cannot open port " + std::string(port_spec) + ": " + e.message}};
    }
  }
  return std::move(port).value();
}
}  // namespace

Result<std::unique_ptr<Initiator>, Error> Initiator::create(
    std::vector<std::unique_ptr<io::Port>> ports, Options options) {
  if (ports.empty() || !ports.front())
    return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
  for (size_t i = 0; i < ports.size(); ++i) {
    if (!ports[i]) return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
    for (size_t j = 0; j < i; ++j)
      if (ports[j]->mac() == ports[i]->mac())
        return Unexpected{Error{ErrorKind::kInvalidArgument,
                                "the same port given twice: " + std::string(ports[i]->spec()) +
                                    " and " + std::string(ports[j]->spec()) + " are both " +
                                    io::to_string(ports[i]->mac())}};
  }
  std::unique_ptr<io::Port> first = std::move(ports.front());
  ports.erase(ports.begin());
  auto impl = std::make_unique<Impl>(std::move(first), std::move(options), std::move(ports));
  if (auto st = impl->start(); !st) return Unexpected{st.error()};
  return std::unique_ptr<Initiator>(new Initiator(std::move(impl)));
}

Result<std::unique_ptr<Initiator>, Error> Initiator::open(std::span<const std::string> port_specs,
                                                          Options options) {
  if (port_specs.empty()) return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
  if (port_specs.size() == 1) return open(port_specs.front(), std::move(options));
  std::vector<std::unique_ptr<io::Port>> ports;
  for (size_t i = 0; i < port_specs.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (port_specs[j] == port_specs[i])
        return Unexpected{
            Error{ErrorKind::kInvalidArgument, "the same port given twice: " + port_specs[i]}};
    auto p = open_one_port(port_specs[i]);
    if (!p) return Unexpected{p.error()};
    ports.push_back(std::move(p).value());
  }
  return create(std::move(ports), std::move(options));
}

Result<std::unique_ptr<Initiator>, Error> Initiator::create(std::unique_ptr<io::Port> port,
                                                            Options options) {
  if (!port) return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
  auto impl = std::make_unique<Impl>(std::move(port), std::move(options));
  if (auto st = impl->start(); !st) return Unexpected{st.error()};
  return std::unique_ptr<Initiator>(new Initiator(std::move(impl)));
}

Result<std::unique_ptr<Initiator>, Error> Initiator::open(std::string_view port_spec,
                                                          Options options) {
  auto port = open_one_port(port_spec);
  if (!port) return Unexpected{port.error()};
  return create(std::move(port).value(), std::move(options));
}

Result<std::vector<TargetInfo>, Error> Initiator::discover(std::string_view target_filter) {
  return impl_->discover(target_filter);
}

Status<Error> Initiator::connect(const TargetInfo& target) {
  return impl_->connect(target);
}

Result<TargetInfo, Error> Initiator::connect(std::string_view target_name) {
  auto found = impl_->discover(target_name);
  if (!found) return Unexpected{found.error()};
  std::vector<TargetInfo>& list = found.value();
  if (target_name.empty() && list.size() > 1) {
    std::string names;
    for (const auto& t : list) names += (names.empty() ? "" : ", ") + t.name;
    return Unexpected{Error{ErrorKind::kInvalidArgument,
                            "several targets answered (" + names + "): choose one with --target"}};
  }
  const TargetInfo& t = list.front();
  if (auto st = impl_->connect(t); !st) return Unexpected{st.error()};
  return t;
}

void Initiator::disconnect() {
  impl_->disconnect();
}

void Initiator::submit(ScsiCommand command, Completion done) {
  impl_->submit(std::move(command), std::move(done));
}

void Initiator::submit_into(ScsiCommand command, std::span<uint8_t> data_in, Completion done) {
  impl_->submit(std::move(command), std::move(done), data_in);
}

void Initiator::add_poller(int fd, std::function<void()> poll) {
  impl_->add_poller(fd, std::move(poll));
}

void Initiator::remove_poller(int fd) {
  impl_->remove_poller(fd);
}

std::future<CommandResult> Initiator::execute(ScsiCommand command) {
  auto p = std::make_shared<std::promise<CommandResult>>();
  auto f = p->get_future();
  impl_->submit(std::move(command), [p](CommandResult&& r) { p->set_value(std::move(r)); });
  return f;
}

Stats Initiator::stats() const {
  return impl_->stats();
}
TargetInfo Initiator::target() const {
  return impl_->target();
}
uint32_t Initiator::max_data_per_command() const {
  return impl_->max_data();
}
io::MacAddress Initiator::local_mac() const {
  return impl_->port().mac();
}
size_t Initiator::port_mtu() const {
  return impl_->port().mtu();
}
std::string Initiator::lun_identity(uint16_t lun) const {
  return impl_->lun_identity(lun);
}
void Initiator::remember_identity(uint16_t lun, std::string identity) {
  impl_->remember_identity(lun, std::move(identity));
}

}  // namespace hyperscsi::initiator
