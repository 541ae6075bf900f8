/**
 * Hosts without bash (busybox systems such as Alpine): everything the library wraps around a
 * command must work under a POSIX `sh`, and the default `shell` (`/bin/bash -c`) must fall back
 * to `/bin/sh` there.
 *
 * A bash-less host is made from this one: a second sshd, with the test server's configuration and
 * keys, runs in a mount namespace of its own (it needs root, as the test users do) in which
 * - the test users' login shell is busybox's `sh` (an `/etc/passwd` with that shell bound over
 *   the real one), and `/bin/sh` stays dash;
 * - `/bin/bash` is a file that cannot be run: whatever still calls bash fails loudly (126);
 * - `ps`, `awk`, `sleep`, `tr`, `mktemp`, `head`, `dd`, `cat`, `mkfifo` and `wc` are busybox's, as
 *   on Alpine (its `ps` knows no `-p`, its `dd` is not GNU's).
 * Nothing outside the namespace sees any of it; the namespace ends with that sshd's sessions.
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { CommandTimeout } from "../src/Errors.ts"
import { remote, remoteFileExists, remoteSudo } from "../src/internal/remote/operations.ts"
import { guard } from "../src/internal/remote/run.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { connectionSettings, failureOf, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()

// Runs as root in the new namespace, then becomes the sshd.
const namespaceScript = `set -e
d=$1 cfg=$2 port=$3
sed -e "s#^\\(tb[a-z]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:\\).*#\\1$d/bin/sh#" /etc/passwd >"$d/passwd"
mount --bind "$d/passwd" /etc/passwd
mount --bind "$d/nobash" "$(readlink -f /bin/bash)"
for t in ps awk sleep tr mktemp head dd cat mkfifo wc; do
  mount --bind "$(command -v busybox)" "$(readlink -f "$(command -v "$t")")"
done
exec "$(command -v sshd || echo /usr/sbin/sshd)" -D -f "$cfg" -E "$d/sshd.log" -o "PidFile=$d/sshd.pid" \\
  -o "ListenAddress=127.0.0.1:$port"`

const freePort = Effect.promise(() =>
  new Promise<number>((resolve, reject) => {
    const probe = net.createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address()
      probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })
)

const accepts = (port: number) =>
  Effect.promise(() =>
    new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1")
      socket.once("connect", () => {
        socket.destroy()
        resolve(true)
      })
      socket.once("error", () => resolve(false))
    })
  )

interface BashlessHost {
  readonly port: number
  readonly dir: string
  readonly knownHosts: string
}

/** The bash-less sshd, stopped (and its directory removed) when the layer's scope closes. */
const bashlessHost = Effect.acquireRelease(
  Effect.gen(function*() {
    if (!server.isRoot) {
      return yield* Effect.die(new Error("the bash-less host needs root (mount namespaces)"))
    }
    const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-posix-"))
    fs.chmodSync(dir, 0o755)
    fs.mkdirSync(path.join(dir, "bin"))
    const busybox = ["/usr/bin/busybox", "/bin/busybox"].find((p) => fs.existsSync(p))
    if (busybox === undefined) {
      return yield* Effect.die(new Error("busybox is not installed: apt-get install busybox"))
    }
    fs.symlinkSync(busybox, path.join(dir, "bin", "sh"))
    fs.writeFileSync(path.join(dir, "nobash"), "this host has no bash\n", { mode: 0o644 })
    const port = yield* freePort
    const knownHosts = path.join(dir, "known_hosts")
    const hostKey = fs.readFileSync(path.join(server.stateDir, "ssh_host_ed25519_key.pub"), "utf8")
      .split(" ").slice(0, 2).join(" ")
    fs.writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`)
    const child: ChildProcess = spawn(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        namespaceScript,
        "sh",
        dir,
        server.sshdConfigPath,
        `${port}`
      ],
      { stdio: ["ignore", "ignore", "inherit"] }
    )
    for (let i = 0; i < 100 && !(yield* accepts(port)); i++) yield* Effect.sleep("100 millis")
    const host: BashlessHost = { port, dir, knownHosts }
    return { child, host }
  }),
  ({ child, host }) =>
    Effect.sync(() => {
      child.kill("SIGTERM")
      fs.rmSync(host.dir, { recursive: true, force: true })
    })
).pipe(Effect.map(({ host }) => host))

const layerFor = (shell: string | undefined) =>
  Layer.unwrap(Effect.map(bashlessHost, (host) =>
    Layer.mergeAll(
      Ssh.layer,
      Settings.layer({
        ...connectionSettings(),
        knownHostsFile: host.knownHosts,
        host: `${server.user}@127.0.0.1:${host.port}`,
        quiet: true,
        ...(shell === undefined ? {} : { shell })
      })
    )))

const hostile = "$(touch /tmp/tb-pwned) `id` 'single' \"double\" \\ ; | & * ~ $HOME\nsecond line\t!"

/** A local directory every user may enter, with a name that needs quoting, removed afterwards. */
const quotedDir = Effect.acquireRelease(
  Effect.sync(() => {
    const base = fs.mkdtempSync(path.join(tmpdir(), "tb-posix-cwd-"))
    fs.chmodSync(base, 0o755)
    const dir = path.join(base, `a b'c"d $x`)
    fs.mkdirSync(dir, { mode: 0o777 })
    fs.chmodSync(dir, 0o777)
    return { base, dir }
  }),
  ({ base }) => Effect.sync(() => fs.rmSync(base, { recursive: true, force: true }))
)

/** A directory only root may enter, removed afterwards. */
const rootOnlyDir = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-posix-root-"))
    fs.chmodSync(dir, 0o700)
    return dir
  }),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

// The default shell (falling back to dash's /bin/sh), dash itself, and busybox's sh for every
// wrapper, each on the host above, whose login shell is busybox's.
for (const shell of [undefined, "/bin/sh -c", "/bin/busybox sh -c"]) {
  layer(layerFor(shell), { timeout: "120 seconds", excludeTestServices: true })(
    `a host without bash, shell ${shell ?? "default"}`,
    (it) => {
      it.effect("has no bash to run, and commands run in a POSIX sh", () =>
        Effect.gen(function*() {
          const probe = yield* remote("[ -x /bin/bash ] && echo bash || echo none; echo \"$0\"", {
            warnOnly: true
          })
          assert.strictEqual(probe.exitCode, 0, probe.stderr)
          const [bash, zero] = probe.stdoutLines
          assert.strictEqual(bash, "none")
          assert.strictEqual(zero, shell === "/bin/busybox sh -c" ? "sh" : "/bin/sh")
          // A second command on the same connection takes the same way (nothing is cached wrong).
          assert.strictEqual((yield* remote("echo again")).stdout, "again\n")
        }))

      it.effect("changes to a directory whose name needs quoting and passes hostile variables", () =>
        Effect.gen(function*() {
          const { dir } = yield* quotedDir
          const result = yield* remote(`pwd; printf '%s|' "$HOSTILE" "$EMPTY"`, {
            remoteWorkingDir: dir,
            env: { HOSTILE: hostile, EMPTY: "" }
          })
          assert.strictEqual(result.stdout, `${dir}\n${hostile}||`)
          assert.isFalse(fs.existsSync("/tmp/tb-pwned"))
          const list = yield* remote(["printf", "%s\\n", "it's", "$HOME"], {
            remoteWorkingDir: dir,
            env: { A: hostile }
          })
          assert.strictEqual(list.stdout, "it's\n$HOME\n")
        }).pipe(Effect.scoped))

      it.effect("runs as root and as sudoUser, with the directory and variables inside sudo", () =>
        Effect.gen(function*() {
          const { dir } = yield* quotedDir
          const root = yield* remoteSudo(`id -un; pwd; printf '%s' "$HOSTILE"`, {
            remoteWorkingDir: dir,
            env: { HOSTILE: hostile }
          })
          assert.strictEqual(root.stdout, `root\n${dir}\n${hostile}`)
          if (server.otherUser !== undefined) {
            const other = yield* remoteSudo("id -un", { sudoUser: server.otherUser })
            assert.strictEqual(other.stdout, `${server.otherUser}\n`)
          }
          // Without a shell of ours: an argument list through sudo, the login shell reading the line.
          const plain = yield* remoteSudo(["id", "-un"], { useShell: false })
          assert.strictEqual(plain.stdout, "root\n")
        }).pipe(Effect.scoped))

      it.effect("answers sudo's password prompt, hiding it, and the command starts after it", () =>
        Effect.gen(function*() {
          if (server.passwordUser === undefined || server.passwordUserPassword === undefined) return
          const password = server.passwordUserPassword
          const collector = Output.makeCollector()
          const result = yield* remoteSudo("id -un; echo \"$X\"", {
            user: server.passwordUser,
            sudoPassword: Redacted.make(password),
            env: { X: "x y" },
            quiet: false
          }).pipe(Effect.provide(Output.layerCollect(collector)))
          assert.strictEqual(result.stdout, "root\nx y\n")
          assert.notInclude(result.stderr, "password")
          for (const line of collector.lines()) assert.notInclude(line, password)
        }))

      it.effect("gives a command end of input, and hides output when quiet", () =>
        Effect.gen(function*() {
          const collector = Output.makeCollector()
          const result = yield* remote("cat; read -r line || echo eof; echo err >&2", {
            timeout: "20 seconds",
            combineStderr: false
          }).pipe(Effect.provide(Output.layerCollect(collector)))
          assert.strictEqual(result.stdout, "eof\n")
          assert.strictEqual(result.stderr, "err\n")
          assert.deepStrictEqual(collector.lines(), [])
          const sudo = yield* remoteSudo("cat; echo done", { timeout: "20 seconds" })
          assert.strictEqual(sudo.stdout, "done\n")
          const merged = yield* remote("echo out; echo err >&2", { combineStderr: true })
          assert.strictEqual(merged.stdout, "out\nerr\n")
          const tty = yield* remote("tty", { pty: true })
          assert.match(tty.stdout, /^\/dev\/pts\/\d+\r?\n$/)
        }))

      it.effect("a timeout stops the command and its children", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("posix_timeout")
          const exit = yield* Effect.exit(
            remote(`sh -c 'sleep 600; :' child-${marker} & sleep 600; :`, { timeout: "2 seconds" })
          )
          assert.instanceOf(failureOf(exit), CommandTimeout)
          assert.isTrue(yield* waitForProcesses(marker, false, 15), "the child outlived the timeout")
          const sudoMarker = uniqueMarker("posix_sudo_timeout")
          const sudoExit = yield* Effect.exit(
            remoteSudo(`sh -c 'sleep 600; :' child-${sudoMarker} & sleep 600; :`, { timeout: "2 seconds" })
          )
          assert.instanceOf(failureOf(sudoExit), CommandTimeout)
          assert.isTrue(yield* waitForProcesses(sudoMarker, false, 15), "root's child outlived the timeout")
        }))

      it.effect("an interruption stops the command and its children", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("posix_interrupt")
          const fiber = yield* Effect.forkChild(remote(`sh -c 'sleep 600; :' child-${marker} & sleep 600; :`))
          assert.isTrue(yield* waitForProcesses(marker, true, 15), "the command did not start")
          yield* Fiber.interrupt(fiber)
          assert.isTrue(yield* waitForProcesses(marker, false, 15), "the child outlived the interruption")
        }))

      it.effect("the guard stops a command whose channel went (busybox ps and awk)", () =>
        Effect.gen(function*() {
          const settings = yield* Settings.Settings
          const marker = uniqueMarker("posix_guard")
          // A plain ssh client, killed outright: the channel closes with no word from the library.
          const client = spawn("ssh", [
            "-F",
            "/dev/null",
            "-i",
            settings.keyFile ?? "",
            "-o",
            `UserKnownHostsFile=${settings.knownHostsFile}`,
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            `${settings.host?.split(":")[1]}`,
            `${server.user}@127.0.0.1`,
            `${guard("exec")}; exec sh -c 'sh -c "sleep 600; :" child-${marker} & sleep 600; :' ${marker}`
          ], { stdio: ["pipe", "ignore", "ignore"] })
          assert.isTrue(yield* waitForProcesses(marker, true, 15), "the command did not start")
          client.kill("SIGKILL")
          assert.isTrue(yield* waitForProcesses(marker, false, 15), "the command outlived its channel")
        }))

      it.effect("remoteFileExists, with and without sudo", () =>
        Effect.gen(function*() {
          const dir = yield* rootOnlyDir
          const file = path.join(dir, "it's here")
          fs.writeFileSync(file, "x")
          assert.isTrue(yield* remoteFileExists("/etc/passwd"))
          assert.isFalse(yield* remoteFileExists(file))
          assert.isTrue(yield* remoteFileExists(file, { useSudo: true }))
          assert.isFalse(yield* remoteFileExists(`${file}-not`, { useSudo: true }))
        }).pipe(Effect.scoped))

      it.effect("uploads and downloads, as the login user and through sudo", () =>
        Effect.gen(function*() {
          const { dir } = yield* quotedDir
          const bytes = new Uint8Array(300_000).map((_, i) => (i * 7919) % 256)
          yield* Transfer.upload(bytes, `${dir}/plain.bin`)
          assert.deepStrictEqual(new Uint8Array(yield* Transfer.download(`${dir}/plain.bin`)), bytes)
          const rootDir = yield* rootOnlyDir
          yield* Transfer.upload({ content: "secret\n" }, `${rootDir}/s f`, { useSudo: true, mode: 0o600 })
          assert.strictEqual(fs.readFileSync(`${rootDir}/s f`, "utf8"), "secret\n")
          assert.strictEqual(fs.statSync(`${rootDir}/s f`).uid, 0)
          const back = yield* Transfer.download(`${rootDir}/s f`, undefined, { useSudo: true })
          assert.strictEqual(new TextDecoder().decode(back), "secret\n")
          if (server.passwordUser !== undefined && server.passwordUserPassword !== undefined) {
            const options = {
              user: server.passwordUser,
              useSudo: true,
              sudoPassword: Redacted.make(server.passwordUserPassword)
            }
            yield* Transfer.upload({ content: "via password\n" }, `${rootDir}/p`, options)
            assert.strictEqual(fs.readFileSync(`${rootDir}/p`, "utf8"), "via password\n")
            const again = yield* Transfer.download(`${rootDir}/p`, undefined, options)
            assert.strictEqual(new TextDecoder().decode(again), "via password\n")
          }
        }).pipe(Effect.scoped))

      it.effect("many commands at once on one connection", () =>
        Effect.gen(function*() {
          const results = yield* Effect.all(
            Array.from({ length: 30 }, (_, i) => remote(`echo ${i}`, { env: { N: `${i}` } })),
            { concurrency: "unbounded" }
          )
          assert.deepStrictEqual(results.map((r) => r.stdout), results.map((_, i) => `${i}\n`))
          assert.isTrue(Exit.isSuccess(yield* Effect.exit(remote("exit 0"))))
        }))
    }
  )
}
