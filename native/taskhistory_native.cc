// The two things Node cannot do on its own that the daemon needs from the kernel:
// the credentials of a Unix socket's peer (SO_PEERCRED) and one datagram to a Unix socket
// path (sd_notify to $NOTIFY_SOCKET, which may be a Linux abstract name).
#include <napi.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

// An Error shaped like Node's own system errors: code (ENOENT...), errno and syscall.
Napi::Error ErrnoError(Napi::Env env, int error_number, const char* syscall, const std::string& subject) {
  const char* name = strerrorname_np(error_number);
  std::string code = name != nullptr ? name : "E" + std::to_string(error_number);
  Napi::Error error = Napi::Error::New(env, std::string(syscall) + " " + subject + ": " + std::strerror(error_number) + " (" + code + ")");
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -error_number));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

// peerCredentials(fd) -> {uid, gid, pid} of the process that connected (or was connected to)
// the Unix stream socket fd, as the kernel recorded them at connect time.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "peerCredentials(fd): fd must be a number");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred credentials {};
  socklen_t length = sizeof credentials;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    throw ErrnoError(env, errno, "getsockopt(SO_PEERCRED)", "fd " + std::to_string(fd));
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("uid", Napi::Number::New(env, credentials.uid));
  result.Set("gid", Napi::Number::New(env, credentials.gid));
  result.Set("pid", Napi::Number::New(env, credentials.pid));
  return result;
}

// sendDatagram(path, message): one datagram from a fresh socket, never blocking (EAGAIN when
// the receiver's queue is full). A path starting with '@' is an abstract name, as in NOTIFY_SOCKET.
Napi::Value SendDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsString() || !info[1].IsBuffer()) {
    throw Napi::TypeError::New(env, "sendDatagram(path, message): path must be a string and message a Buffer");
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const Napi::Buffer<char> message = info[1].As<Napi::Buffer<char>>();

  struct sockaddr_un address {};
  address.sun_family = AF_UNIX;
  const bool abstract = !path.empty() && path[0] == '@';
  // An abstract name has no terminating NUL; a filesystem path needs room for one.
  if (path.size() < 2 || path.size() + (abstract ? 0 : 1) > sizeof address.sun_path) {
    throw Napi::RangeError::New(env, "sendDatagram: socket path '" + path + "' is too short or longer than " +
                                         std::to_string(sizeof address.sun_path - 1) + " bytes");
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  if (abstract) address.sun_path[0] = '\0';
  const socklen_t address_length = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));

  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket(AF_UNIX, SOCK_DGRAM)", "for " + path);
  const ssize_t sent = sendto(fd, message.Data(), message.Length(), MSG_NOSIGNAL | MSG_DONTWAIT,
                              reinterpret_cast<const struct sockaddr*>(&address), address_length);
  const int send_error = errno;
  close(fd);
  if (sent < 0) throw ErrnoError(env, send_error, "sendto", path);
  return Napi::Number::New(env, static_cast<double>(sent));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("sendDatagram", Napi::Function::New(env, SendDatagram, "sendDatagram"));
  return exports;
}

}  // namespace

NODE_API_MODULE(taskhistory_native, Init)
