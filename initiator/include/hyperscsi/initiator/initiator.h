// Initiator: the client side of the HyperSCSI stack as a C++ library.
//
// One Initiator owns one Port (or several: multipath, see create()) and one
// event-loop thread. The loop thread is
// the only user of the port and of the protocol state machines
// (proto::DiscoveryClient, proto::InitiatorSession); every public call posts
// work to it (an eventfd wakes it) and, where it has a result, waits on a
// future. It sleeps in epoll on the port's fd and the eventfd (busy-polls
// poll-mode ports) with a timeout from the state machines' next_deadline().
//
// Commands: submit() queues a SCSI command; up to max_outstanding (at most
// 512, the 9-bit tag space) are in flight on the session, the rest wait in a
// FIFO inside the Initiator. Each gets a per-session cmd_sn; replies are
// matched by tag and cmd_sn. A command answered with UNIT ATTENTION, BUSY or
// TASK SET FULL is repeated (bounded, BUSY after a short backoff), as a SCSI
// midlayer would. Completion callbacks run on the loop thread:
// they must not block (they may call submit()).
//
// Recovery: when the session dies (dead peer, or the target ended it, e.g.
// because it restarted and answers kUnknownSession) the loop resumes the
// session if it can, else logs in afresh (retrying with backoff), then
// reissues every unanswered command with its original cmd_sn in cmd_sn
// order. A command without a reply after Options::dead_time fails with
// CompletionError::kDeadTime. A command is completed only by its reply, so a
// write reported successful was executed by the target.
//
// Identity: open_lun() remembers the LUN's device identity (its VPD page
// 0x83 designator). After every fresh login during recovery (not after a
// resume: the target kept the session) nothing is reissued until each
// remembered LUN's identity has been read again; a LUN that is another disk
// now (a RAM disk after a target restart, another file behind the number) or
// is gone is fenced: its commands, pending and future, fail with
// CompletionError::kIdentityMismatch, so it never serves another disk's data.
// The check uses one tag of the 512, so at most 511 commands are in flight.
//
// Thread-safety: every public member function is safe from any thread,
// except that none of them may be called from a completion callback other
// than submit() and the async helpers (they would wait on the loop thread
// itself). Destroying the Initiator ends the session without an orderly
// disconnect (call disconnect() first) and fails pending commands with
// kShutdown.
// Errors: setup paths return Result<T, Error> with a typed ErrorKind and a
// message naming what was wrong; the data path reports through
// CommandResult and never throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/io/wake_policy.h"
#include "hyperscsi/proto/initiator_session.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::initiator {

using Duration = std::chrono::nanoseconds;

enum class ErrorKind : uint8_t {
  kInterfaceAbsent,  // the port's interface does not exist
  kNotRoot,          // opening the port needs root / CAP_NET_RAW
  kPort,             // any other port failure (message from the backend)
  kNoTarget,         // no target answered (discovery or login)
  kLunAbsent,        // the target does not export that LUN to us
  kAccessDenied,     // the target refused the login (access list or authentication)
  kMtuMismatch,      // full-MTU frames do not pass between the peers (message names the MTU)
  kLoginRejected,    // refused for another reason (message says which)
  kNotConnected,     // no session: call connect() first
  kScsi,             // a setup command ended with CHECK CONDITION (message decodes the sense)
  kCommandFailed,    // a setup command failed without SCSI status (dead time, shutdown...)
  kInvalidArgument,
};
std::string_view to_string(ErrorKind k);

struct Error {
  ErrorKind kind = ErrorKind::kPort;
  std::string message;
};

enum class LogLevel : uint8_t { kInfo, kWarning, kError };

struct Options {
  std::string initiator_name = "hyperscsi-initiator";
  // Called on the loop thread for what an operator must know: target lost,
  // re-login started / succeeded / failed, commands that timed out or failed
  // (at most one line a second, with counts), identity mismatches, capacity
  // changes. Must return quickly; empty: no logging.
  std::function<void(LogLevel, const std::string&)> log;
  Duration dead_time = std::chrono::seconds(60);  // a command without reply for this long fails
  Duration discovery_window = std::chrono::milliseconds(1000);
  uint32_t max_outstanding = 511;  // commands in flight on the session (1..511)
  uint32_t login_attempts = 5;     // per login; recovery keeps retrying until dead_time
  Duration login_timeout = std::chrono::milliseconds(250);
  Duration reconnect_backoff_max = std::chrono::seconds(2);
  uint32_t max_transfer = (1u << 20) + 4096;  // PDU size we accept (negotiated down)
  std::vector<uint8_t> auth;                  // opaque authentication bytes for login
  // Secret shared with the target (docs/operations.md "Shared secrets and
  // protection"); empty: log in unauthenticated. Wiped with the Options.
  proto::crypto::SecretBytes secret;
  // Weakest per-frame protection accepted (the target may require stronger).
  proto::Protection protection = proto::Protection::kOff;
  // Offer CHECKSUM at login (crc32 over every frame, end to end); used only
  // if the target offers it too. Off: the Ethernet FCS alone guards the wire.
  bool checksum = true;
  // While commands are in flight, the I/O thread polls for up to this long
  // before it sleeps (like the kernel's busy_poll): a reply that arrives
  // within it costs no wake-up, at the price of a CPU spinning meanwhile.
  // Zero: always sleep. 50 us halved 4 KiB QD1 latency on a veth (63 -> 30
  // us) at about the same CPU per GiB (docs/benchmarks.md); with nothing in
  // flight the thread never spins. It polls only while polling pays: while
  // the measured reply time is at most 8 budgets and recent polls found
  // something; a link-bound pipeline (replies in milliseconds) sleeps, in
  // batches (io::WakePolicy).
  std::chrono::microseconds busy_poll{50};
  // An established session without a command for this long stops receiving
  // (io::Port::set_rx_paused; AF_PACKET only) until it next sends: other
  // sessions on the host then pay nothing per frame for its socket. The
  // first command after such a pause waits for the kernel to re-attach the
  // socket, about 10 ms; keepalives re-attach it briefly. Zero: never pause.
  Duration rx_pause_after = std::chrono::seconds(2);
  uint64_t seed = 0;  // 0: random nonces; else deterministic
};

// Reads a secret file: its bytes with one trailing newline removed; at least
// proto::kMinSecretSize bytes. Errors: kInvalidArgument with the reason.
Result<proto::crypto::SecretBytes, Error> read_secret_file(const std::string& path);

// "A,B" -> {"A", "B"}: the port list of the command lines and the nbdkit
// plugin (port=A,B) for Initiator::open(span); one entry without a comma.
// Empty entries are dropped.
std::vector<std::string> split_port_list(std::string_view list);

struct TargetInfo {
  io::MacAddress mac{};
  std::string name;
  uint16_t mtu = 0;
  uint32_t features = 0;
  std::vector<proto::LunInfo> luns;
};

// What a SCSI command needs. data_out is sent after the CDB; data_in_length
// is the largest data-in accepted.
struct ScsiCommand {
  uint16_t lun = 0;
  std::vector<uint8_t> cdb;  // 6..32 bytes
  std::vector<uint8_t> data_out;
  uint32_t data_in_length = 0;
  uint8_t task_attribute = 0;  // 0 simple, 1 ordered, 2 head of queue
  // Bytes at the front of data_out that are not data but room for the
  // command's header: when it is exactly command_headroom(cdb.size()) the
  // initiator writes the header there and sends this buffer, without copying
  // the data into a new one (issue 16: a 128 KiB write was copied three times
  // on the initiator). Any other value: the data is copied behind a header.
  uint32_t data_out_headroom = 0;
  // Data-out borrowed from the caller instead of copied into data_out (which
  // must then be empty): the initiator frames the PDU from these bytes
  // (issue 13: the NBD and FUSE exports copied every write once). Contract:
  // the caller keeps them valid and unchanged from submit() until the
  // command's completion has run. The initiator reads them whenever it sends
  // the command, again after a retry or a re-login (a target restart) and on
  // a multipath session (which copies them per send); it runs the completion
  // only once nothing of its own (connection, port) refers to them any more,
  // so the completion may free or reuse them. Cost of the guarantee: a
  // completion may wait until the target has acknowledged the last frames
  // (normally already done when its reply arrives). A command that fails
  // without a reply (dead time on a dead link, fencing) still fails on time:
  // the connection copies the bytes it still holds (it may yet deliver them,
  // as it would a copied write's) and the completion waits only for the
  // port to send the frames it was handed.
  std::span<const uint8_t> data_out_borrowed{};
};

// The room a command's PDU header takes in front of its data-out.
uint32_t command_headroom(size_t cdb_length);

enum class CompletionError : uint8_t {
  kNone,              // the target answered: look at status/sense
  kDeadTime,          // no reply within Options::dead_time
  kShutdown,          // the Initiator was destroyed or disconnected first
  kInvalid,           // bad command (CDB length, transfer above the negotiated maximum)
  kTargetFailure,     // the target answered kTargetFailure / kRejected
  kIdentityMismatch,  // after a re-login the LUN was another disk, or gone: fenced
};
std::string_view to_string(CompletionError e);

struct CommandResult {
  CompletionError error = CompletionError::kNone;
  std::string message;  // set when error != kNone
  uint8_t status = 0;   // SCSI status (0 GOOD, 2 CHECK CONDITION, 8 BUSY...)
  std::vector<uint8_t> sense;
  std::vector<uint8_t> data_in;
  uint32_t residual = 0;
  bool good() const { return error == CompletionError::kNone && status == 0; }
  // One line: "GOOD", "CHECK CONDITION: ILLEGAL REQUEST, invalid opcode", "dead time ...".
  std::string describe() const;
};

using Completion = std::function<void(CommandResult&&)>;

// A failed command as a typed Error: kLunAbsent for LOGICAL UNIT NOT
// SUPPORTED, kScsi for other CHECK CONDITIONs (the message decodes the
// sense), kCommandFailed without SCSI status. `what` names the command.
Error error_of(const CommandResult& r, std::string_view what);

struct Capacity {
  uint64_t num_blocks = 0;
  uint32_t block_size = 0;
  bool thin = false;                 // LBPME from READ CAPACITY(16): UNMAP is meaningful
  bool unmapped_reads_zero = false;  // LBPRZ from READ CAPACITY(16)
};

struct InquiryData {
  uint8_t device_type = 0;
  std::string vendor;    // trimmed
  std::string product;   // trimmed
  std::string revision;  // trimmed
};

// One path of a multipath session (docs/protocol.md 14): a local port and a
// target port, its state and counters (summed over its generations).
struct PathStats {
  uint8_t id = 0;
  std::string state;  // proto::CandidateState: joining, verifying, active, failed, unreachable...
  io::MacAddress local_mac{};
  io::MacAddress target_mac{};
  uint16_t mtu = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
  uint64_t frames_retransmitted = 0;
  uint64_t pdus_sent = 0;
  uint64_t pdus_received = 0;
  uint64_t failures = 0;  // failovers: times declared failed
  uint64_t pdus_moved_off = 0;
  uint64_t redemptions = 0;  // times it came back after failing
  Duration srtt{};
};

struct Stats {
  std::string state;  // session state (proto::to_string(InitiatorState)) or "not connected"
  std::string target_name;
  io::MacAddress target_mac{};
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  uint16_t mtu = 0;
  uint32_t max_transfer = 0;
  uint64_t submitted = 0;
  uint64_t completed = 0;         // by a reply
  uint64_t failed = 0;            // completed without GOOD: any CompletionError or a SCSI error
  uint64_t timed_out = 0;         // of which: no reply within the dead time
  uint64_t fenced = 0;            // of which: refused because the LUN's identity changed
  uint64_t reissued = 0;          // commands sent again after recovery
  uint64_t retried = 0;           // commands repeated after UNIT ATTENTION, BUSY or TASK SET FULL
  uint64_t resumes = 0;           // successful resumes
  uint64_t relogins = 0;          // successful fresh logins during recovery
  uint64_t relogin_failures = 0;  // login attempts during recovery that failed
  uint64_t identity_mismatches = 0;  // LUNs fenced: another disk (or none) after a re-login
  uint64_t unmatched_replies = 0;
  // Frames this port received that belonged to another session on this host
  // (or arrived before its filter narrowed): near zero when the port's
  // kernel filter works (AF_PACKET, libpcap), every other session's frame
  // otherwise (rx_filter then ends in "(in user space)").
  uint64_t foreign_frames = 0;
  std::string rx_filter;   // what the port delivers: "session 0x... from MAC", "control only"
  uint64_t rx_pauses = 0;  // times the idle session stopped receiving (Options::rx_pause_after)
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint32_t in_flight = 0;
  uint32_t queued = 0;
  proto::TransportStats transport;
  io::PortCounters port;
  // How the I/O thread waited (io::WakeCounters: turns, waits that could
  // block, holds, busy polls, hits and time, waits for a full transmit
  // path), its wake-ups (voluntary context switches) and CPU time so far,
  // and the reply time it measures (smoothed; busy polling follows it).
  io::WakeCounters wake;
  uint64_t wakeups = 0;
  double cpu_seconds = 0;
  Duration reply_time{};
  // A multipath session: every path (empty for a single-port session).
  std::vector<PathStats> paths;
};

class Lun;

class Initiator {
 public:
  // Takes the port; starts the loop thread.
  static Result<std::unique_ptr<Initiator>, Error> create(std::unique_ptr<io::Port> port,
                                                          Options options = {});
  // Opens the port from a spec ("afpacket:eth1", "mem:NAME"...) first.
  static Result<std::unique_ptr<Initiator>, Error> open(std::string_view port_spec,
                                                        Options options = {});
  // Several ports (multipath, docs/protocol.md 14): the first logs in and
  // discovers; with more than one, the login offers MULTIPATH and, if the
  // target agrees, the session joins a path over every other (local port,
  // target port) pair, spreads commands over the paths that work, moves the
  // work of a failed path to the others (the caller sees no error) and
  // probes it until it answers again. One port behaves exactly as create().
  // Errors: no port, the same port (MAC) twice.
  static Result<std::unique_ptr<Initiator>, Error> create(
      std::vector<std::unique_ptr<io::Port>> ports, Options options = {});
  static Result<std::unique_ptr<Initiator>, Error> open(std::span<const std::string> port_specs,
                                                        Options options = {});
  ~Initiator();
  Initiator(const Initiator&) = delete;
  Initiator& operator=(const Initiator&) = delete;

  // Broadcasts discovery and collects answers for Options::discovery_window.
  // `target_filter` empty: every target. kNoTarget when nobody answered.
  Result<std::vector<TargetInfo>, Error> discover(std::string_view target_filter = {});

  // Logs in to a target (negotiation, MTU verification). Replaces any
  // current session (pending commands fail with kShutdown).
  Status<Error> connect(const TargetInfo& target);
  // Discovers (filtered by name; empty: the only target) and connects.
  Result<TargetInfo, Error> connect(std::string_view target_name);

  // Orderly disconnect (bounded wait); pending commands fail with kShutdown.
  void disconnect();

  // Queues a command; `done` runs once, on the loop thread.
  void submit(ScsiCommand command, Completion done);
  // submit() with the data-in copied straight into `data_in` (owned by the
  // caller, valid until `done` ran; its size the command's data_in_length)
  // instead of CommandResult::data_in, which stays empty: one copy less.
  // Bytes beyond what the target sent are zeroed.
  void submit_into(ScsiCommand command, std::span<uint8_t> data_in, Completion done);

  // Serves another source of requests on the loop thread itself (the FUSE
  // export's /dev/fuse), saving a thread hop per request: `fd` joins the
  // loop's wait set (level-triggered, readable) and `poll` runs on the loop
  // thread at the start of every turn of the loop, before the commands it
  // submits are sent in the same turn. `poll` must not block: it reads `fd`
  // until it would block (bounded) and may call submit(), submit_into() and
  // the Lun async helpers. remove_poller() returns once `poll` will not run
  // again. Neither may be called from the loop thread.
  void add_poller(int fd, std::function<void()> poll);
  void remove_poller(int fd);
  std::future<CommandResult> execute(ScsiCommand command);

  // A LUN of the connected target: checks that it exists, reads its
  // capacity (READ CAPACITY(16), falling back to (10)) and remembers its
  // identity (VPD 0x83) for the checks after a re-login.
  Result<Lun, Error> open_lun(uint16_t lun);
  // The identity open_lun() read for `lun`: the designator it compares
  // ("uuid:...", "naa:...", ...), or empty when the target offers none.
  std::string lun_identity(uint16_t lun) const;

  Stats stats() const;
  TargetInfo target() const;              // the target of the last connect() (a copy)
  uint32_t max_data_per_command() const;  // data bytes per command at the negotiated maximum
  io::MacAddress local_mac() const;
  size_t port_mtu() const;

  class Impl;

 private:
  void remember_identity(uint16_t lun, std::string identity);
  explicit Initiator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Block-level helpers for one LUN. Transfers are split over the negotiated
// maximum; a split request completes when its last part does, with the first
// failure's result. Cheap to copy; must not outlive its Initiator.
class Lun {
 public:
  Lun(Initiator& initiator, uint16_t lun, Capacity capacity, bool read_only = false)
      : initiator_(&initiator), lun_(lun), capacity_(capacity), read_only_(read_only) {}

  uint16_t number() const { return lun_; }
  const Capacity& capacity() const { return capacity_; }
  uint64_t size_bytes() const { return capacity_.num_blocks * capacity_.block_size; }
  // Write-protected: the WP bit of MODE SENSE at open_lun() (or the
  // discovery record's read-only flag when MODE SENSE is not supported).
  bool read_only() const { return read_only_; }
  // Data bytes one command carries at the negotiated maximum.
  uint32_t max_data_per_command() const { return initiator_->max_data_per_command(); }
  Initiator& initiator() const { return *initiator_; }

  // Async: `done` gets data_in (reads) on the loop thread.
  void read(uint64_t lba, uint32_t blocks, Completion done);
  // Async read into `out` (blocks x block size bytes, owned by the caller and
  // valid until `done` ran): the data is copied once, from the reply into
  // `out`; `done` gets an empty data_in, on the loop thread.
  void read_into(uint64_t lba, uint32_t blocks, std::span<uint8_t> out, Completion done);
  // `data` is copied before the call returns.
  void write(uint64_t lba, std::span<const uint8_t> data, Completion done, bool fua = false);
  // The same without the copy: `data` is borrowed (ScsiCommand::
  // data_out_borrowed): valid and unchanged until `done` ran.
  void write_borrowed(uint64_t lba, std::span<const uint8_t> data, Completion done,
                      bool fua = false);
  void flush(Completion done);
  void unmap(uint64_t lba, uint64_t blocks, Completion done);
  // Zeroes the blocks with WRITE SAME(16) of one zero block (no UNMAP), in
  // commands of at most 65535 blocks (what Linux's sd sends to a target that
  // states no limit). A target without WRITE SAME fails it with ILLEGAL
  // REQUEST; ByteDevice::write_zeroes then writes zeros instead.
  void write_zeroes(uint64_t lba, uint64_t blocks, Completion done);

  // Synchronous wrappers.
  Result<std::vector<uint8_t>, Error> read_sync(uint64_t lba, uint32_t blocks);
  Status<Error> write_sync(uint64_t lba, std::span<const uint8_t> data, bool fua = false);
  Status<Error> flush_sync();
  Status<Error> unmap_sync(uint64_t lba, uint64_t blocks);
  Result<InquiryData, Error> inquiry();

 private:
  Initiator* initiator_;
  uint16_t lun_;
  Capacity capacity_;
  bool read_only_ = false;
};

// SCSI helpers shared by the library and the tools.
namespace scsi {
struct SenseInfo {
  bool valid = false;
  uint8_t key = 0;
  uint8_t asc = 0;
  uint8_t ascq = 0;
};
SenseInfo parse_sense(std::span<const uint8_t> sense);
std::string_view sense_key_name(uint8_t key);
// "LOGICAL BLOCK ADDRESS OUT OF RANGE" for known codes, else "ASC 0xNN ASCQ 0xNN".
std::string asc_name(uint8_t asc, uint8_t ascq);
std::string_view status_name(uint8_t status);
// "ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE".
std::string describe_sense(std::span<const uint8_t> sense);

std::vector<uint8_t> read_cdb(uint64_t lba, uint32_t blocks);
std::vector<uint8_t> write_cdb(uint64_t lba, uint32_t blocks, bool fua);
std::vector<uint8_t> inquiry_cdb(uint16_t alloc);
std::vector<uint8_t> read_capacity10_cdb();
std::vector<uint8_t> read_capacity16_cdb(uint32_t alloc);
// MODE SENSE(6), all pages, block descriptors disabled: byte 2 bit 7 of the
// reply is WP (write protected).
std::vector<uint8_t> mode_sense6_cdb(uint8_t alloc);
std::vector<uint8_t> synchronize_cache_cdb();
// WRITE SAME(16) without UNMAP: one block of data-out written to `blocks` blocks.
std::vector<uint8_t> write_same16_cdb(uint64_t lba, uint32_t blocks);
std::vector<uint8_t> unmap_cdb(uint16_t param_len);
// The UNMAP parameter list with one descriptor.
std::vector<uint8_t> unmap_params(uint64_t lba, uint32_t blocks);
InquiryData parse_inquiry(std::span<const uint8_t> data);
// INQUIRY with EVPD for a VPD page.
std::vector<uint8_t> inquiry_vpd_cdb(uint8_t page, uint16_t alloc);
// The LU's identity from VPD page 0x83: its preferred LU designator as
// "uuid:HEX", "naa:HEX", "eui64:HEX", "name:TEXT" or "t10:TEXT"; empty if
// the page holds none.
std::string lu_identity(std::span<const uint8_t> vpd83);
}  // namespace scsi

}  // namespace hyperscsi::initiator
