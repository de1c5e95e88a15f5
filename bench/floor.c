/* The floor of the control-path benchmark: the least a supervisor with a
 * datagram control socket must do. It runs one child in its own process
 * group and answers, on a unix datagram socket:
 *   STOP   kill(-child, SIGTERM), then nothing until the child is reaped
 *   START  fork and exec the child again when it is down
 *   STATUS {"state":"running"} or {"state":"stopped"} to the sender
 * Nothing else: no files, no log, no reply to STOP or START, no /proc.
 * Signals are blocked and read from a signalfd, as container-run does, so
 * the wait is one poll over two descriptors.
 *
 *   floor SOCKET CHILD [ARG...]
 *
 * Built by bench/run (cc -O2); bench.py runs it as PID 1 of a namespace,
 * beside the other supervisors. SIGTERM or SIGINT: the child's group gets
 * SIGKILL and floor exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t child = 0;
static char **child_argv;
static sigset_t handled;

static void start(void) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    sigprocmask(SIG_UNBLOCK, &handled, NULL);
    execv(child_argv[0], child_argv);
    _exit(127);
  }
  if (pid > 0) {
    setpgid(pid, pid);
    child = pid;
  }
}

static void reap(void) {
  pid_t pid;
  while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
    if (pid == child)
      child = 0;
}

static void command(int sock) {
  char buf[256];
  struct sockaddr_un from;
  socklen_t len = sizeof from;
  ssize_t n = recvfrom(sock, buf, sizeof buf - 1, MSG_DONTWAIT,
                       (struct sockaddr *)&from, &len);
  if (n <= 0)
    return;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    n--;
  buf[n] = 0;
  if (strcmp(buf, "STOP") == 0 && child > 0) {
    kill(-child, SIGTERM);
  } else if (strcmp(buf, "START") == 0 && child == 0) {
    start();
  } else if (strcmp(buf, "STATUS") == 0 && len > sizeof(sa_family_t)) {
    const char *reply = child > 0 ? "{\"state\":\"running\"}\n"
                                  : "{\"state\":\"stopped\"}\n";
    sendto(sock, reply, strlen(reply), MSG_DONTWAIT,
           (struct sockaddr *)&from, len);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: floor SOCKET CHILD [ARG...]\n");
    return 2;
  }
  child_argv = argv + 2;
  sigemptyset(&handled);
  sigaddset(&handled, SIGCHLD);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGINT);
  sigprocmask(SIG_BLOCK, &handled, NULL);
  int sfd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  unlink(argv[1]);
  if (sfd < 0 || sock < 0 ||
      bind(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("floor");
    return 1;
  }
  start();
  struct pollfd fds[2] = {{sfd, POLLIN, 0}, {sock, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0 && errno != EINTR)
      return 1;
    if (fds[1].revents)
      command(sock);
    if (fds[0].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
          reap();
        } else {
          if (child > 0)
            kill(-child, SIGKILL);
          return 0;
        }
      }
    }
  }
}
