// iSCSI through libiscsi's asynchronous API. libiscsi contexts are not
// thread-safe, so one loop thread owns the context: submit() queues the
// request and wakes the loop through an eventfd; the loop issues READ(16)/
// WRITE(16) tasks and services the socket (iscsi_which_events/iscsi_service).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "transport.h"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

namespace hyperscsi::bench {
namespace {

struct Pending {
  IoRequest request;
  IoDone done;
};

class IscsiTransport final : public Transport {
 public:
  IscsiTransport(iscsi_context* ctx, int lun, uint64_t size, uint32_t block_size)
      : ctx_(ctx), lun_(lun), size_(size), block_size_(block_size) {
    wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop_ = std::thread([this] { run(); });
  }
  ~IscsiTransport() override {
    stop_ = true;
    wake();
    loop_.join();
    iscsi_logout_sync(ctx_);
    iscsi_destroy_context(ctx_);
    ::close(wake_);
    std::lock_guard lock(mu_);
    for (auto* p : queue_) delete p;
  }

  std::string name() const override { return "iscsi"; }
  std::string backend() const override { return "libiscsi"; }
  uint64_t size_bytes() const override { return size_; }
  uint32_t block_size() const override { return block_size_; }

  void submit(const IoRequest& request, IoDone done) override {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(new Pending{request, std::move(done)});
    }
    wake();
  }

 private:
  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_, &one, sizeof one);
  }

  static void on_complete(iscsi_context* ctx, int status, void* command_data, void* priv) {
    auto* p = static_cast<Pending*>(priv);
    auto* task = static_cast<scsi_task*>(command_data);
    std::string error;
    if (status != SCSI_STATUS_GOOD) {
      error = std::string("iSCSI status ") + std::to_string(status) + ": " + iscsi_get_error(ctx);
    } else if (!p->request.write) {
      if (!task || task->datain.size != int(p->request.length))
        error = "read returned " + std::to_string(task ? task->datain.size : 0) + " bytes";
      else
        std::memcpy(p->request.buffer, task->datain.data, p->request.length);
    }
    if (task) scsi_free_scsi_task(task);
    p->done(error.empty(), error);
    delete p;
  }

  void issue(Pending* p) {
    const IoRequest& r = p->request;
    const uint64_t lba = r.offset / block_size_;
    scsi_task* task = r.write ? iscsi_write16_task(ctx_, lun_, lba, r.buffer, r.length,
                                                   int(block_size_), 0, 0, 0, 0, 0, on_complete, p)
                              : iscsi_read16_task(ctx_, lun_, lba, r.length, int(block_size_), 0, 0,
                                                  0, 0, 0, on_complete, p);
    if (!task) {
      p->done(false, std::string("cannot queue iSCSI task: ") + iscsi_get_error(ctx_));
      delete p;
    }
  }

  void run() {
    while (!stop_) {
      std::deque<Pending*> batch;
      {
        std::lock_guard lock(mu_);
        batch.swap(queue_);
      }
      for (auto* p : batch) issue(p);
      pollfd fds[2] = {{iscsi_get_fd(ctx_), short(iscsi_which_events(ctx_)), 0},
                       {wake_, POLLIN, 0}};
      if (::poll(fds, 2, 100) < 0) continue;
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] auto n = ::read(wake_, &v, sizeof v);
      }
      if (fds[0].revents && iscsi_service(ctx_, fds[0].revents) < 0) {
        // The connection failed: libiscsi reconnects on its own; a failed
        // reconnect completes the tasks with an error status.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  iscsi_context* ctx_;
  int lun_;
  uint64_t size_;
  uint32_t block_size_;
  int wake_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::deque<Pending*> queue_;
  std::thread loop_;
};

}  // namespace

TransportResult open_iscsi(const IscsiOptions& options) {
  if (options.url.empty()) return Unexpected(std::string("--url is required for iscsi"));
  iscsi_context* ctx = iscsi_create_context(options.initiator_name.c_str());
  if (!ctx) return Unexpected(std::string("cannot create an iSCSI context"));
  auto fail = [&](const std::string& what) -> TransportResult {
    std::string msg = what + ": " + iscsi_get_error(ctx);
    iscsi_destroy_context(ctx);
    return Unexpected(std::move(msg));
  };
  iscsi_url* url = iscsi_parse_full_url(ctx, options.url.c_str());
  if (!url) return fail("bad iSCSI URL " + options.url);
  iscsi_set_targetname(ctx, url->target);
  iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE);
  const int lun = url->lun;
  const std::string portal = url->portal;
  iscsi_destroy_url(url);
  if (iscsi_full_connect_sync(ctx, portal.c_str(), lun) != 0)
    return fail("cannot log in to " + options.url);
  scsi_task* task = iscsi_readcapacity16_sync(ctx, lun);
  if (!task || task->status != SCSI_STATUS_GOOD) {
    if (task) scsi_free_scsi_task(task);
    return fail("READ CAPACITY(16) failed");
  }
  auto* cap = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(task));
  if (!cap || cap->block_length == 0) {
    scsi_free_scsi_task(task);
    return fail("cannot decode READ CAPACITY(16)");
  }
  const uint64_t size = (cap->returned_lba + 1) * cap->block_length;
  const uint32_t block_size = cap->block_length;
  scsi_free_scsi_task(task);
  return std::unique_ptr<Transport>(new IscsiTransport(ctx, lun, size, block_size));
}

}  // namespace hyperscsi::bench
