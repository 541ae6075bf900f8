/**
 * Connecting through a ProxyCommand against the throwaway OpenSSH server: a real `ssh -W` as the
 * command, its tokens, commands that fail or hang, interruption, and the process table after
 * each (no command may outlive its connection).
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import { remote } from "../src/internal/remote/operations.ts"
import type { Target } from "../src/internal/ssh/port.ts"
import * as ProxyCommand from "../src/internal/ssh/proxyCommand.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { connectionFailure, failureOf, settingsLayer, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()

/** A fresh connection service per test: its scope's end is the connections' end. */
const withSsh = (patch: Settings.Patch) =>
  Effect.provide(
    Layer.mergeAll(
      Ssh.layer,
      settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true, ...patch })
    )
  )

/** `ssh -W` through `jump` as OpenSSH users write it, with the test server's key and known_hosts. */
const sshW = (jump: string, marker: string) =>
  [
    "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes",
    `-o UserKnownHostsFile=${server.knownHostsPath} -i ${server.keyPath}`,
    // Unused by -W, but it puts the marker in the command line, to find the process by.
    `-o SetEnv=TBMARK=${marker}`,
    `-p ${server.port} -l ${server.user} -W %h:%p ${jump}`
  ].join(" ")

/** Log lines of connections accepted on `host`. */
const acceptedOn = (host: string) =>
  server.readLog().split("\n").filter((l) => l.includes(`on ${host} port ${server.port}`)).length

describe("ProxyCommand tokens", () => {
  const target = {
    label: "web",
    host: "10.0.0.5",
    port: 2222,
    user: "deploy"
  } as Target
  const expand = (command: string) => Effect.runSync(Effect.result(ProxyCommand.expand(command, target)))

  it("expands %h %p %r %n and %%, as ssh_config(5) TOKENS says", () => {
    const result = expand("connect %r@%h:%p (%n) 100%% done")
    assert.strictEqual(result._tag, "Success")
    assert.strictEqual(
      (result as { readonly success: string }).success,
      "connect deploy@10.0.0.5:2222 (web) 100% done"
    )
  })

  it("refuses a token ProxyCommand does not take, naming it", () => {
    const result = expand("nc %h %p %C")
    assert.strictEqual(result._tag, "Failure")
    const error = (result as { readonly failure: SettingsError }).failure
    assert.instanceOf(error, SettingsError)
    assert.strictEqual(error.setting, "proxyCommand")
    assert.include(error.message, "%C")
  })

  it("none is none", () => {
    assert.isUndefined(ProxyCommand.proxyCommandOf({ ...target, proxyCommand: "none" }))
    assert.isUndefined(ProxyCommand.proxyCommandOf(target))
    assert.strictEqual(ProxyCommand.proxyCommandOf({ ...target, proxyCommand: "nc %h %p" }), "nc %h %p")
  })
})

describe("ProxyCommand", () => {
  it.live(
    "connects through `ssh -W %h:%p` to the host, and stops the command when the connection closes",
    () =>
      Effect.gen(function*() {
        const marker = uniqueMarker("proxyW")
        const before = acceptedOn("127.0.0.10")
        const result = yield* Effect.gen(function*() {
          const first = yield* remote("echo $SSH_CONNECTION; whoami", { host: "127.0.0.10" })
          // a second command shares the connection, and so the one command
          yield* remote("true", { host: "127.0.0.10" })
          assert.strictEqual(remoteProcesses(marker).length, 1)
          return first
        }).pipe(withSsh({ proxyCommand: sshW("127.0.0.9", marker) }))
        assert.match(result.stdout, new RegExp(` 127\\.0\\.0\\.10 ${server.port}\\n${server.user}\\n$`))
        assert.strictEqual(acceptedOn("127.0.0.10"), before + 1)
        // the layer's scope ended: the command is gone with its connection
        assert.isTrue(yield* waitForProcesses(marker, false, 3))
      }),
    30_000
  )

  it.live(
    "rsync goes through the same ProxyCommand: a host name nothing else resolves is reached",
    () =>
      Effect.gen(function*() {
        const marker = uniqueMarker("proxyRsync")
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tb-proxy-rsync-"))
        try {
          fs.writeFileSync(path.join(dir, "a.txt"), "through the proxy\n")
          // The server's user writes `out/` here (this machine is the server).
          fs.chmodSync(dir, 0o777)
          // Only the command knows where the host is: a direct connection could not even resolve it.
          const command = sshW("127.0.0.9", marker).replace("-W %h:%p", `-W 127.0.0.10:${server.port}`)
          yield* Transfer.rsyncUpload(`${dir}/a.txt`, `${dir}/out/`).pipe(
            withSsh({
              host: "tb-nowhere.invalid",
              proxyCommand: command,
              knownHostsFile: path.join(dir, "known_hosts"),
              hostKeyPolicy: "accept-new"
            }),
            Effect.provide(NodeServices.layer)
          )
          assert.strictEqual(fs.readFileSync(path.join(dir, "out", "a.txt"), "utf8"), "through the proxy\n")
        } finally {
          fs.rmSync(dir, { recursive: true, force: true })
        }
      }),
    30_000
  )

  it.live("stops the whole process group: a child of the command goes too", () =>
    Effect.gen(function*() {
      const marker = uniqueMarker("proxyGroup")
      const child = `sleep 600.${Math.floor(Math.random() * 1e6)}`
      yield* remote("true", { host: "127.0.0.10" }).pipe(
        withSsh({ proxyCommand: `sh -c '${child} & exec ${sshW("127.0.0.9", marker)}'` })
      )
      assert.isTrue(yield* waitForProcesses(marker, false, 3))
      assert.isTrue(yield* waitForProcesses(child, false, 3))
    }), 30_000)

  it.live(
    "a command that fails at once is a ConnectionError (proxy) naming it, with the end of its stderr",
    () =>
      Effect.gen(function*() {
        const started = Date.now()
        const silent = connectionFailure(
          yield* Effect.exit(remote("true", { host: "127.0.0.10" }).pipe(withSsh({ proxyCommand: "false" })))
        )
        assert.strictEqual(silent.reason, "proxy")
        assert.include(
          silent.message,
          "the ProxyCommand `false` exited with code 1 before the SSH handshake completed"
        )
        assert.include(silent.message, "[127.0.0.10] cannot connect")

        const talking = connectionFailure(
          yield* Effect.exit(
            remote("true", { host: "127.0.0.10" }).pipe(
              withSsh({
                proxyCommand:
                  "sh -c 'echo one >&2; echo two >&2; echo bastion said no to %r@%h:%p >&2; exit 3'"
              })
            )
          )
        )
        assert.strictEqual(talking.reason, "proxy")
        assert.include(talking.message, "exited with code 3")
        assert.include(talking.message, `bastion said no to ${server.user}@127.0.0.10:${server.port}`)
        assert.include(talking.message, "one\n")

        const missing = connectionFailure(
          yield* Effect.exit(
            remote("true", { host: "127.0.0.10" }).pipe(withSsh({ proxyCommand: "/nonexistent/proxy %h" }))
          )
        )
        assert.strictEqual(missing.reason, "proxy")
        assert.include(missing.message, "exited with code 127")
        assert.include(missing.message, "/nonexistent/proxy")
        // no connectTimeout waited out: the exit is known at once
        assert.isBelow(Date.now() - started, 5000)
      }),
    30_000
  )

  it.live("a real ssh -W that cannot reach the host fails with its own words", () =>
    Effect.gen(function*() {
      const marker = uniqueMarker("proxyRefused")
      const error = connectionFailure(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.10", port: 1 }).pipe(
            withSsh({ proxyCommand: sshW("127.0.0.9", marker) })
          )
        )
      )
      assert.strictEqual(error.reason, "proxy")
      assert.match(error.message, /Connection refused|open failed/)
      assert.isTrue(yield* waitForProcesses(marker, false, 3))
    }), 30_000)

  it.live("a command that hangs is bounded by connectTimeout, and stopped", () =>
    Effect.gen(function*() {
      const sleeper = `sleep 600.${Math.floor(Math.random() * 1e6)}`
      const started = Date.now()
      const error = connectionFailure(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.10" }).pipe(
            withSsh({
              proxyCommand: `sh -c 'echo waiting for the bastion >&2; exec ${sleeper}'`,
              connectTimeout: "1 second"
            })
          )
        )
      )
      const elapsed = Date.now() - started
      assert.strictEqual(error.reason, "timeout")
      assert.include(error.message, "through the ProxyCommand")
      assert.include(error.message, "waiting for the bastion")
      assert.isBelow(elapsed, 3000)
      assert.isTrue(yield* waitForProcesses(sleeper, false, 3))
    }), 30_000)

  it.live(
    "an interrupted connect stops the command at once, not after connectTimeout",
    () =>
      Effect.gen(function*() {
        const sleeper = `sleep 600.${Math.floor(Math.random() * 1e6)}`
        const fiber = yield* Effect.forkChild(
          remote("true", { host: "127.0.0.10" }).pipe(
            withSsh({ proxyCommand: sleeper, connectTimeout: "60 seconds" })
          )
        )
        assert.isTrue(yield* waitForProcesses(sleeper, true, 10))
        const started = Date.now()
        yield* Fiber.interrupt(fiber)
        assert.isBelow(Date.now() - started, 2500)
        assert.isTrue(yield* waitForProcesses(sleeper, false, 3))
      }),
    30_000
  )

  it.live("an unknown token is a SettingsError before anything runs", () =>
    Effect.gen(function*() {
      const error = failureOf(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.10" }).pipe(withSsh({ proxyCommand: "nc %h %p %x" }))
        )
      )
      assert.instanceOf(error, SettingsError)
    }))
})
