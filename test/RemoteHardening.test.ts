/**
 * Promises of remote commands that an attacker, an impatient user or a dying controller tries to
 * break, against the throwaway OpenSSH server (this machine, so its process table is checked):
 * the sudo password reaches sudo only, commands see end of input, an interruption at any moment
 * stops the command and frees its channel, a command never outlives its controller, and a slow
 * consumer bounds memory.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { remote, remoteSudo } from "../src/internal/remote/operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { FaultProxy } from "../tests-remote/faultProxy.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { connectionSettings, pollUntil, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()
const hostOn = (address: string, user = server.user) => `${user}@${address}:${server.port}`

const connection = { ...connectionSettings(server), connectRetryDelay: "200 millis" } as const

const base = Settings.layer({ host: hostOn("127.0.0.1"), ...connection })

const hex = (text: string) => Buffer.from(text).toString("hex")

// Prints every string of every process's command line (sudo's prompt among them) on both
// streams, twice, then shows what its standard input holds, as hex so no masking can hide it.
// On a pty the terminal stays open: `timeout` ends the read.
const processTableReader = (pty: boolean) =>
  `dump() { for f in /proc/[0-9]*/cmdline; do tr '\\000' '\\n' <"$f"; echo; done 2>/dev/null; }; ` +
  `dump; dump >&2; sleep 0.3; dump; dump >&2; ` +
  `printf 'got:'; ${pty ? "timeout 3 " : ""}od -An -tx1 | tr -d ' \\n'; echo`

const readIfThere = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return undefined
  }
}

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "300 seconds", excludeTestServices: true })(
  "remote commands under attack",
  (it) => {
    describe("the sudo password reaches sudo and nothing else", () => {
      it.effect("a command run as another user that prints the whole process table never receives it", () =>
        Effect.gen(function*() {
          const realPassword = readServerFromEnv().passwordUserPassword!
          const cases = [
            // tbtest's sudo never prompts: the password is set but never asked for.
            { user: server.user, password: `decoy-${uniqueMarker("pw")}`, prompts: false },
            // tbpass's sudo prompts every time.
            { user: server.passwordUser!, password: realPassword, prompts: true }
          ]
          for (const { password, prompts, user } of cases) {
            for (const pty of [false, true]) {
              for (const combineStderr of [false, true]) {
                const result = yield* remoteSudo(processTableReader(pty), {
                  host: hostOn("127.0.0.1", user),
                  sudoUser: server.otherUser!,
                  sudoPassword: Redacted.make(password),
                  pty,
                  combineStderr,
                  quiet: true,
                  timeout: Duration.seconds(30)
                })
                const where = `(sudo prompts: ${prompts}, pty: ${pty}, combineStderr: ${combineStderr})`
                const got = /got:([0-9a-f]*)/.exec(result.stdout)
                assert.isNotNull(got, `no report of the input ${where}: ${result.stdout.slice(-300)}`)
                assert.strictEqual(got?.[1], "", `the command read input ${where}`)
                const everything = result.stdout + result.stderr
                assert.notInclude(everything, hex(password), where)
                assert.notInclude(everything, password, where)
                // Masking would hide an echo of the password: there must be nothing to mask.
                assert.notInclude(everything, "********", where)
                // The command did see sudo's command line, prompt and all: the attack was real.
                assert.include(everything, "sudo password:", where)
              }
            }
          }
        }))
    })

    describe("the sudo password of a transfer reaches sudo and nothing else", () => {
      it.effect("a process of the sudo user reading every input it can open never gets it", () =>
        Effect.gen(function*() {
          const other = server.otherUser!
          const password = `decoy-${uniqueMarker("pw")}`
          const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-fdreader-"))
          fs.chmodSync(dir, 0o777)
          const out = path.join(dir, "got")
          const stop = path.join(dir, "stop")
          // The file is the other user's alone: only a transfer through sudo as that user reads it.
          const file = path.join(dir, "data.bin")
          fs.writeFileSync(file, Buffer.alloc(64 * 1024 * 1024, 7))
          const uid = Number(execFileSync("id", ["-u", other]).toString().trim())
          fs.chownSync(file, uid, uid)
          fs.chmodSync(file, 0o600)
          const ready = path.join(dir, "ready")
          const reader = spawn("sudo", [
            "-n",
            "-u",
            other,
            "python3",
            path.join(import.meta.dirname, "fixtures", "fd-reader.py"),
            out,
            stop,
            ready
          ], { stdio: "ignore" })
          // On a busy machine the transfers could be over before the reader looks once.
          assert.isTrue(yield* pollUntil(() => fs.existsSync(ready), 20_000), "the reader never started")
          const sudo = { useSudo: true, sudoUser: other, sudoPassword: Redacted.make(password) } as const
          // tbtest's sudo never prompts: the password is set, never asked for, and must stay put.
          // (The kernel already keeps another user's descriptors of a process sudo started out of
          // reach; the password is kept out of every command's input all the same.)
          for (let i = 0; i < 3; i++) {
            yield* Transfer.download(file, path.join(dir, `copy-${i}`), { ...sudo, showProgress: false })
            yield* Transfer.upload(path.join(dir, `copy-${i}`), path.join(dir, `up-${i}.bin`), sudo)
            fs.rmSync(path.join(dir, `copy-${i}`))
          }
          fs.writeFileSync(stop, "")
          yield* Effect.promise(() => new Promise((resolve) => reader.once("exit", resolve)))
          const [opened, got] = fs.readFileSync(out, "utf8").split(" ")
          fs.rmSync(dir, { recursive: true, force: true })
          assert.isAbove(Number(opened), 0, "the reader opened no input at all: the test proved nothing")
          assert.notInclude(got ?? "", hex(password))
        }))
    })

    describe("the guard is nobody's job", () => {
      it.effect("a command that waits for its background jobs ends, on every command of a connection", () =>
        Effect.gen(function*() {
          // From the second command on, a command for the login bash runs in that very shell.
          const host = hostOn("127.0.0.4")
          for (const useShell of [true, false]) {
            for (let i = 0; i < 3; i++) {
              const result = yield* remote("sleep 0.2 & sleep 0.3 & jobs -p | wc -l; wait; echo done", {
                host,
                useShell,
                quiet: true,
                timeout: Duration.seconds(20)
              })
              assert.strictEqual(
                result.stdout.replace(/\s+/g, " ").trim(),
                "2 done",
                `useShell ${useShell}, #${i}`
              )
            }
          }
        }))

      it.effect("no variable of the library's wrapper reaches the command", () =>
        Effect.gen(function*() {
          const host = hostOn("127.0.0.4")
          for (let i = 0; i < 3; i++) {
            const result = yield* remote("echo \"[${tb_b-unset}][${b-unset}][${t-unset}][${me-unset}]\"", {
              host,
              quiet: true
            })
            assert.strictEqual(result.stdout, "[unset][unset][unset][unset]\n", `#${i}`)
          }
        }))
    })

    describe("output is exact unless sudo read the password", () => {
      it.effect("a sudo password that was never written masks nothing", () =>
        Effect.gen(function*() {
          const options = { sudoPassword: Redacted.make("deploy"), quiet: true } as const
          for (const useSudo of [false, true]) {
            const result = yield* remote("echo release deploy-2024 by deploy", { ...options, useSudo })
            assert.strictEqual(result.stdout, "release deploy-2024 by deploy\n", `useSudo ${useSudo}`)
          }
        }))
    })

    describe("commands always see end of input", () => {
      it.effect("cat and read return at once with a password that sudo never asks for, or with sudo off", () =>
        Effect.gen(function*() {
          const password = Redacted.make(`unused-${uniqueMarker("pw")}`)
          const command = "cat; read x; echo ended:$?"
          const runs = [
            remoteSudo(command, { sudoPassword: password, quiet: true, timeout: Duration.seconds(20) }),
            remote(command, { sudoPassword: password, quiet: true, timeout: Duration.seconds(20) }),
            remote(command, { quiet: true, timeout: Duration.seconds(20) }),
            remote(command, { quiet: true, timeout: Duration.seconds(20) }).pipe(
              Settings.settings({ sudoPassword: password, useSudo: true })
            ),
            remote(command, { quiet: true, timeout: Duration.seconds(20), sudoUser: server.otherUser! }).pipe(
              Settings.settings({ sudoPassword: password, useSudo: true, combineStderr: false })
            ),
            // Handed to the login shell as written, sudo in front of its first command only: what
            // follows reads /dev/null too.
            remoteSudo(`true; ${command}`, { useShell: false, quiet: true, timeout: Duration.seconds(20) }),
            remoteSudo(`true; ${command}`, {
              useShell: false,
              sudoPassword: password,
              quiet: true,
              timeout: Duration.seconds(20)
            })
          ]
          for (const run of runs) {
            const result = yield* run
            assert.strictEqual(result.stdout, "ended:1\n")
          }
        }))
    })

    describe("interrupting a remote command at any moment stops it and frees its channel", () => {
      it.effect("100 interruptions from 0 to 15 ms after the start leave no process, and the connection works", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("early")
          const host = hostOn("127.0.0.7")
          for (let i = 0; i < 100; i++) {
            const fiber = yield* Effect.forkChild(
              remote(`sleep 300; echo ${marker}`, { host, quiet: true, useSudo: i % 4 === 3 })
            )
            yield* Effect.sleep(Duration.millis(i % 16))
            yield* Fiber.interrupt(fiber)
          }
          // Siblings in Effect.all that fail at once interrupt the rest while they start.
          for (let i = 0; i < 10; i++) {
            const exit = yield* Effect.exit(Effect.all([
              remote(`sleep 300; echo ${marker}`, { host, quiet: true }),
              remote(`sleep 300; echo ${marker}`, { host, quiet: true, useSudo: true }),
              Effect.fail("sibling failed")
            ], { concurrency: "unbounded" }))
            assert.isTrue(Exit.isFailure(exit))
          }
          assert.isTrue(
            yield* waitForProcesses(marker, false, 10),
            `left running: ${JSON.stringify(remoteProcesses(marker).slice(0, 5))}`
          )
          // Every channel is free again: more commands at once than the server's session limit.
          const results = yield* Effect.all(
            Array.from({ length: 12 }, (_, i) => remote(`echo ${i}`, { host, quiet: true })),
            { concurrency: "unbounded" }
          )
          assert.deepStrictEqual(results.map((r) => r.stdout), Array.from({ length: 12 }, (_, i) => `${i}\n`))
        }))
    })

    describe("opening an SFTP session is interruptible", () => {
      it.effect("Effect.timeout ends the open while the server's SFTP process is stopped; the session is ended", () =>
        Effect.gen(function*() {
          const sftpPids = () =>
            server.sshdPids().filter((pid) => {
              // A session may end between the listing and the read.
              const cmdline = readIfThere(`/proc/${pid}/cmdline`)
              return cmdline?.includes("internal-sftp") === true
            })
          const settings = yield* Settings.Settings
          const ssh = yield* Ssh.SshConnections
          const connection = yield* ssh.connect({ ...settings, host: hostOn("127.0.0.5") })
          // Stops the SFTP process of a new session as soon as it appears, before it answers. On a
          // busy machine the session may answer first: such a try proves nothing, so try again.
          let exit: Exit.Exit<unknown, unknown> | undefined
          let stopped: Array<number> = []
          for (let attempt = 0; attempt < 10 && (exit === undefined || Exit.isSuccess(exit)); attempt++) {
            const before = sftpPids()
            const caught: Array<number> = []
            const stopper = yield* Effect.forkChild(Effect.gen(function*() {
              for (;;) {
                for (const pid of sftpPids().filter((p) => !before.includes(p) && !caught.includes(p))) {
                  process.kill(pid, "SIGSTOP")
                  caught.push(pid)
                }
                yield* Effect.sleep("1 millis")
              }
            }))
            exit = yield* Effect.exit(Effect.scoped(connection.sftp).pipe(Effect.timeout("1 second")))
            yield* Fiber.interrupt(stopper)
            for (const pid of caught) process.kill(pid, "SIGCONT")
            stopped = caught
          }
          assert.isTrue(
            exit !== undefined && Exit.isFailure(exit),
            "the session opened although its server was stopped"
          )
          assert.isAtLeast(stopped.length, 1, "no SFTP process was stopped: the test proved nothing")
          // Resumed, the late session is ended, and its server process goes away.
          let left = stopped.length
          for (let i = 0; i < 50 && left > 0; i++) {
            yield* Effect.sleep("100 millis")
            left = stopped.filter((pid) => fs.existsSync(`/proc/${pid}`)).length
          }
          assert.strictEqual(left, 0, "the SFTP process of the abandoned session is still there")
          // The connection still opens sessions.
          yield* Effect.scoped(connection.sftp)
        }).pipe(Effect.scoped))
    })

    describe("a remote command never outlives what controls it", () => {
      const controller = path.join(import.meta.dirname, "fixtures", "remote-controller.ts")

      /** Starts the controller, waits until its command runs, kills it with SIGKILL. */
      const killController = (patch: Record<string, unknown>, marker: string) =>
        Effect.gen(function*() {
          const child = spawn(process.execPath, [
            controller,
            JSON.stringify({ host: hostOn("127.0.0.8"), ...connection, ...patch }),
            // Hex: the controller's own command line must not show the marker.
            Buffer.from(`(trap '' TERM; sleep 300; echo ${marker}) & sleep 300; echo ${marker}`).toString(
              "hex"
            )
          ], { stdio: "ignore" })
          const started = yield* waitForProcesses(marker, true, 20)
          child.kill("SIGKILL")
          return started
        })

      it.effect("the controller killed with SIGKILL: the remote process group is gone within 5 s", () =>
        Effect.gen(function*() {
          for (
            const patch of [
              {},
              { useSudo: true },
              { useSudo: true, sudoUser: server.otherUser! },
              { combineStderr: false }
            ]
          ) {
            const marker = uniqueMarker("orphan")
            assert.isTrue(yield* killController(patch, marker), "the command never started")
            // RELIABILITY.md: gone within 3.5 s of the channel closing (TERM, then KILL after 3 s).
            assert.isTrue(
              yield* waitForProcesses(marker, false, 5),
              `still running after its controller died (${JSON.stringify(patch)}): ${
                JSON.stringify(remoteProcesses(marker))
              }`
            )
          }
        }))

      it.effect("the network cut and no way back to the host: the remote process group is gone within 5 s", () =>
        Effect.gen(function*() {
          const proxy = yield* Effect.acquireRelease(
            Effect.promise(() => FaultProxy.start({ port: server.port })),
            (p) => Effect.promise(() => p.close())
          )
          const marker = uniqueMarker("cut")
          const fiber = yield* Effect.forkChild(Effect.exit(
            remote(`(trap '' TERM; sleep 300; echo ${marker}) & sleep 300; echo ${marker}`, { quiet: true })
              .pipe(
                Settings.settings({
                  host: `${server.user}@127.0.0.1:${proxy.port}`,
                  // The proxy's port is new to known_hosts: a file of this test's own learns it.
                  knownHostsFile: path.join(fs.mkdtempSync(path.join(tmpdir(), "tb-cut-")), "known_hosts"),
                  hostKeyPolicy: "accept-new",
                  connectAttempts: 1,
                  connectTimeout: Duration.seconds(2)
                })
              )
          ))
          assert.isTrue(yield* waitForProcesses(marker, true, 20), "the command never started")
          // The library cannot come back to stop it: only the guard on the server can.
          proxy.refuse(true)
          assert.strictEqual(proxy.cutNow(), 1)
          const exit = yield* Fiber.join(fiber)
          assert.isTrue(Exit.isFailure(exit))
          assert.isTrue(
            yield* waitForProcesses(marker, false, 5),
            `still running after the network was cut: ${JSON.stringify(remoteProcesses(marker))}`
          )
        }).pipe(Effect.scoped))

      it.effect("a command that ended leaves what it started in the background running", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("daemon")
          yield* remote(`nohup sh -c 'sleep 30; echo ${marker}' >/dev/null 2>&1 &`, { quiet: true })
          // The guard saw the channel close after the command had ended: nothing to stop.
          yield* Effect.sleep("1 second")
          assert.isTrue(remoteProcesses(marker).length > 0, "the background process was stopped")
          // A bracket in the pattern keeps pkill from matching its own command line.
          yield* remote(`pkill -f '[t]${marker.slice(1)}' || true`, { quiet: true })
        }))
    })
  }
)
