// The binding's runtime: its own worker threads for blocking libvirt calls, and the process-wide
// libvirt initialisation with the thread that runs libvirt's default event loop.
#pragma once

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace ephemera_libvirt {

// Blocks every signal on the calling thread (native threads must leave signals to Node's).
void BlockAllSignals();

// Worker pool (process-wide, leaked on purpose so no destructor races with exit()).
class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool();
    return *pool;
  }

  void Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(fn));
      if (idle_ < queue_.size() && threads_ < max_) {
        threads_++;
        std::thread([this] { Loop(); }).detach();
      }
    }
    cv_.notify_one();
  }

 private:
  Pool() {
    const char* env = getenv("LIBVIRT_NAPI_THREADS");
    int n = env != nullptr ? atoi(env) : 0;
    max_ = n > 0 && n <= 64 ? static_cast<size_t>(n) : 4;
  }

  void Loop() {
    BlockAllSignals();
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        idle_++;
        cv_.wait(lock, [this] { return !queue_.empty(); });
        idle_--;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  size_t idle_ = 0;
  size_t threads_ = 0;
  size_t max_ = 4;
};

// Set once by GlobalInit(): whether libvirt and its event loop are up, and if not, why.
extern bool g_init_ok;
extern std::string g_init_error;
// virInitialize(), virEventRegisterDefaultImpl() and the event loop thread, once per process.
void GlobalInit();

}  // namespace ephemera_libvirt
