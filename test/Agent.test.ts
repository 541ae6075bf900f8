/**
 * Agent forwarding against the throwaway OpenSSH server, with a real ssh-agent started here and
 * holding the server's client key: a remote command sees the agent only on a connection that
 * forwards it, and a second ssh from the server authenticates with it.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import { remote } from "../src/internal/remote/operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf, pollUntil, settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const fingerprint = execFileSync("ssh-keygen", ["-l", "-f", server.keyPath], { encoding: "utf8" }).split(
  " "
)[1]!

/**
 * A real ssh-agent in the foreground (`-D`), holding the test key, at SSH_AUTH_SOCK for the life
 * of the layer; stopped, and the environment put back, when the layer closes.
 */
const agentLayer = Layer.effectDiscard(Effect.acquireRelease(
  Effect.gen(function*() {
    const dir = mkdtempSync(path.join(tmpdir(), "threadbare-agent-test-"))
    const socket = path.join(dir, "agent.sock")
    const agent: ChildProcess = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" })
    const up = yield* pollUntil(() => existsSync(socket), 5000)
    assert.isTrue(up, "ssh-agent did not create its socket")
    execFileSync("ssh-add", ["-q", server.keyPath], {
      env: { ...process.env, SSH_AUTH_SOCK: socket },
      stdio: "ignore"
    })
    const previous = process.env["SSH_AUTH_SOCK"]
    process.env["SSH_AUTH_SOCK"] = socket
    return { agent, dir, previous }
  }),
  ({ agent, dir, previous }) =>
    Effect.gen(function*() {
      if (previous === undefined) delete process.env["SSH_AUTH_SOCK"]
      else process.env["SSH_AUTH_SOCK"] = previous
      agent.kill("SIGTERM")
      const stopped = yield* pollUntil(() => agent.exitCode !== null || agent.signalCode !== null, 5000)
      if (!stopped) agent.kill("SIGKILL")
      rmSync(dir, { recursive: true, force: true })
    })
))

const base = settingsLayer({
  user: server.user,
  port: server.port,
  connectAttempts: 1,
  quiet: true,
  useAgent: true
})

/** Runs `command` on `host` and gives its exit code and output, whatever the code. */
const run = (host: string, command: string) =>
  remote(command, { host }).pipe(
    Settings.settings({ warnOnly: true }),
    Effect.map((r) => ({ exitCode: r.exitCode, stdout: r.stdout }))
  )

// The second hop is plain OpenSSH on the server: no key file of its own (IdentityFile points at
// nothing, so the defaults in ~/.ssh are not read either), no password (BatchMode), so only a
// forwarded agent can log it in.
const secondHop = (to: string) =>
  `ssh -o BatchMode=yes -o IdentityFile=/dev/null -o StrictHostKeyChecking=no ` +
  `-o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR ` +
  `-p ${server.port} ${server.user}@${to} echo second-hop-ok`

const forwarding = Settings.settings({ forwardAgent: true })

layer(Layer.mergeAll(Ssh.layer, base).pipe(Layer.provideMerge(agentLayer)), {
  timeout: "120 seconds",
  excludeTestServices: true
})("agent forwarding", (it) => {
  it.effect("a remote command lists the agent's key only when forwarding is on", () =>
    Effect.gen(function*() {
      const on = yield* run("127.0.0.5", "ssh-add -l").pipe(forwarding)
      assert.strictEqual(on.exitCode, 0)
      assert.include(on.stdout, fingerprint)
      // A second session on the same connection sees it too (the request is made once).
      const again = yield* run("127.0.0.5", "ssh-add -l").pipe(forwarding)
      assert.include(again.stdout, fingerprint)
      // Same host right after: the forwarding connection is not reused for it.
      const off = yield* run("127.0.0.5", "ssh-add -l; echo \"sock=${SSH_AUTH_SOCK:-none}\"")
      assert.notInclude(off.stdout, fingerprint)
      assert.include(off.stdout, "sock=none")
    }))

  it.effect("a second ssh from the server authenticates with the forwarded agent, and fails without", () =>
    Effect.gen(function*() {
      const without = yield* run("127.0.0.6", secondHop("127.0.0.7"))
      assert.notStrictEqual(without.exitCode, 0)
      assert.notInclude(without.stdout, "second-hop-ok")
      assert.match(without.stdout, /Permission denied/)
      const withAgent = yield* run("127.0.0.6", secondHop("127.0.0.7")).pipe(forwarding)
      assert.strictEqual(withAgent.exitCode, 0, withAgent.stdout)
      assert.include(withAgent.stdout, "second-hop-ok")
    }))

  it.effect("through a gateway, the agent reaches the target", () =>
    Effect.gen(function*() {
      const gateway = `${server.user}@127.0.0.8:${server.port}`
      const result = yield* run("127.0.0.9", "ssh-add -l; echo \"client=$SSH_CONNECTION\"").pipe(
        Settings.settings({ gateway, forwardAgent: true })
      )
      assert.include(result.stdout, fingerprint)
      // the command ran on the target
      assert.match(result.stdout, /client=\S+ \d+ 127\.0\.0\.9 /)
    }))

  it.effect("forwardAgent without an agent is a SettingsError naming the setting", () =>
    Effect.gen(function*() {
      const noAgent = failureOf(
        yield* Effect.exit(
          run("127.0.0.5", "true").pipe(Settings.settings({ forwardAgent: true, useAgent: false }))
        )
      )
      assert.instanceOf(noAgent, SettingsError)
      assert.strictEqual(noAgent.setting, "forwardAgent")
      assert.match(noAgent.message, /useAgent/)
      const socket = process.env["SSH_AUTH_SOCK"]
      delete process.env["SSH_AUTH_SOCK"]
      const exit = yield* Effect.exit(run("127.0.0.5", "true").pipe(forwarding)).pipe(
        Effect.ensuring(Effect.sync(() => void (process.env["SSH_AUTH_SOCK"] = socket)))
      )
      assert.isTrue(Exit.isFailure(exit))
      const unset = failureOf(exit)
      assert.instanceOf(unset, SettingsError)
      assert.match(unset.message, /SSH_AUTH_SOCK/)
    }))
})

describe("agent forwarding settings", () => {
  it("is off by default", () => {
    assert.strictEqual(Settings.defaults.forwardAgent, false)
  })
})
