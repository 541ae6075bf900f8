/**
 * SSH connections against the throwaway OpenSSH server of `tests-remote/`: authentication, host
 * keys, ssh_config, jump hosts, agents, dropped connections; and the pure parsers behind them.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { ConnectionError, SettingsError } from "../src/Errors.ts"
import { remote } from "../src/internal/remote/operations.ts"
import { parseHostString } from "../src/internal/settings/hostString.ts"
import * as SshConfig from "../src/internal/ssh/config.ts"
import * as KnownHosts from "../src/internal/ssh/knownHosts.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { Blackhole, FaultProxy } from "../tests-remote/faultProxy.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { connectionFailure, failureOf, settingsLayer, signal } from "./support.ts"

const server = readServerFromEnv()
const temp = mkdtempSync(path.join(tmpdir(), "threadbare-ssh-test-"))
const hostKeyBlob = Buffer.from(
  readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!.split(" ")[2]!,
  "base64"
)

const base = settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true })

const newKey = (name: string): string => {
  const file = path.join(temp, name)
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", file])
  return file
}

/** SIGKILL for a process that may already have gone with its parent. */
const killIfAlive = (pid: number): void => {
  try {
    process.kill(pid, "SIGKILL")
  } catch (error) {
    if ((error as { code?: string }).code !== "ESRCH") throw error
  }
}

const parentOf = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
}

/** Our established TCP connections to `host`:`port` (from /proc/net/tcp). */
const connectionsTo = (host: string, port: number): number => {
  const hex = host.split(".").map((n) => Number(n).toString(16).padStart(2, "0").toUpperCase()).reverse()
    .join("")
  const remoteAddress = `${hex}:${port.toString(16).toUpperCase().padStart(4, "0")}`
  return readFileSync("/proc/net/tcp", "utf8").split("\n").filter((line) => {
    const fields = line.trim().split(/\s+/)
    return fields[2] === remoteAddress && fields[3] === "01"
  }).length
}

/** The pids of the sshd processes serving the connection that runs this command. */
const sessionPids = remote("echo $PPID").pipe(
  Effect.map((r) => {
    const user = Number(r.stdout.trim())
    return [user, parentOf(user)]
  })
)

describe("host strings", () => {
  it("parses every form", () => {
    const ok = (text: string) => Result.getOrThrow(parseHostString(text))
    assert.deepStrictEqual(ok("web-1"), { user: undefined, host: "web-1", port: undefined })
    assert.deepStrictEqual(ok("deploy@web-1"), { user: "deploy", host: "web-1", port: undefined })
    assert.deepStrictEqual(ok("web-1:2222"), { user: undefined, host: "web-1", port: 2222 })
    assert.deepStrictEqual(ok("deploy@10.0.0.1:22"), { user: "deploy", host: "10.0.0.1", port: 22 })
    assert.deepStrictEqual(ok("[::1]:2200"), { user: undefined, host: "::1", port: 2200 })
    assert.deepStrictEqual(ok("me@[fe80::1]"), { user: "me", host: "fe80::1", port: undefined })
    assert.deepStrictEqual(ok("::1"), { user: undefined, host: "::1", port: undefined })
  })

  it("refuses malformed ones, naming host or port", () => {
    const setting = (text: string) => {
      const result = parseHostString(text)
      return Result.isFailure(result) ? result.failure.setting : "accepted"
    }
    assert.strictEqual(setting(""), "host")
    assert.strictEqual(setting("user@"), "host")
    assert.strictEqual(setting("host:0"), "port")
    assert.strictEqual(setting("host:65536"), "port")
    assert.strictEqual(setting("host:http"), "port")
    assert.strictEqual(setting("ho st"), "host")
    assert.strictEqual(setting("host;rm -rf /"), "host")
    assert.strictEqual(setting("[::1"), "host")
    assert.strictEqual(setting("-oProxyCommand=x"), "host")
  })
})

describe("ConnectionError", () => {
  it("keeps its hop through encoding, as across a worker, and shows it in its message", () => {
    const error = new ConnectionError({
      host: "app",
      port: 22,
      user: "deploy",
      reason: "timeout",
      detail: "bastion could not connect to 10.0.0.5:22 within connectTimeout (2000 ms)",
      hop: "deploy@bastion:22 -> 10.0.0.5:22"
    })
    const decoded = Schema.decodeUnknownSync(ConnectionError)(
      JSON.parse(JSON.stringify(Schema.encodeUnknownSync(ConnectionError)(error)))
    )
    assert.strictEqual(decoded.hop, "deploy@bastion:22 -> 10.0.0.5:22")
    assert.include(
      decoded.message,
      "[app] cannot connect as deploy to port 22 (timeout) at hop deploy@bastion:22 -> 10.0.0.5:22:"
    )
    const direct = new ConnectionError({
      host: "app",
      port: 22,
      user: "deploy",
      reason: "refused",
      detail: "x"
    })
    assert.isUndefined(
      Schema.decodeUnknownSync(ConnectionError)(Schema.encodeUnknownSync(ConnectionError)(direct)).hop
    )
    assert.notInclude(direct.message, "hop")
  })
})

describe("ssh_config", () => {
  const config = SshConfig.parse(`
# comment
Host web-* !web-secret
  HostName %h.example.com
  User deploy
  Port=2222
  IdentityFile ~/.ssh/deploy_%r

Host web-1
  User ignored-first-wins
  IdentityFile "/keys/second key"
  ProxyJump jump@bastion:22

Match host whatever
  User never

Host *
  User fallback
  Port 22
`)
  const context = { localUser: "me", home: "/home/me" }

  it("first value wins across matching blocks; IdentityFile accumulates", () => {
    const web1 = SshConfig.resolve(config, "web-1", context)
    assert.strictEqual(web1.hostName, "web-1.example.com")
    assert.strictEqual(web1.user, "deploy")
    assert.strictEqual(web1.port, "2222")
    assert.deepStrictEqual(web1.identityFiles, ["~/.ssh/deploy_deploy", "/keys/second key"])
    assert.strictEqual(web1.proxyJump, "jump@bastion:22")
  })

  it("negated patterns exclude; Match blocks are skipped; Host * is the fallback", () => {
    const secret = SshConfig.resolve(config, "web-secret", context)
    assert.isUndefined(secret.hostName)
    assert.strictEqual(secret.user, "fallback")
    assert.strictEqual(secret.port, "22")
    assert.isTrue(SshConfig.hostMatches(["db?"], "db1"))
    assert.isFalse(SshConfig.hostMatches(["db?"], "db10"))
  })
})

describe("known_hosts", () => {
  const blob = hostKeyBlob
  const encoded = blob.toString("base64")
  const other = Buffer.from(
    readFileSync(`${newKey("kh-other")}.pub`, "utf8").split(" ")[1]!,
    "base64"
  )

  it("matches plain, [host]:port, wildcard and hashed entries", () => {
    const salt = Buffer.from("0123456789abcdefghij")
    const hash = (name: string) =>
      `|1|${salt.toString("base64")}|${
        execFileSync("node", [
          "-e",
          `process.stdout.write(require("crypto").createHmac("sha1", Buffer.from("${
            salt.toString("base64")
          }", "base64")).update(${JSON.stringify(name)}).digest("base64"))`
        ]).toString()
      }`
    const entries = KnownHosts.parse([
      `plain.example ssh-ed25519 ${encoded}`,
      `[ported.example]:2222 ssh-ed25519 ${encoded}`,
      `*.wild.example ssh-ed25519 ${encoded}`,
      `${hash("[hashed.example]:2200")} ssh-ed25519 ${encoded}`,
      `changed.example ssh-ed25519 ${other.toString("base64")}`,
      `@revoked revoked.example ssh-ed25519 ${encoded}`
    ].join("\n"))
    const tag = (host: string, port: number) => KnownHosts.check(entries, host, port, blob)._tag
    assert.strictEqual(tag("plain.example", 22), "Known")
    assert.strictEqual(tag("plain.example", 2222), "Unknown")
    assert.strictEqual(tag("ported.example", 2222), "Known")
    assert.strictEqual(tag("a.wild.example", 22), "Known")
    assert.strictEqual(tag("hashed.example", 2200), "Known")
    assert.strictEqual(tag("hashed.example", 22), "Unknown")
    assert.deepStrictEqual(KnownHosts.check(entries, "changed.example", 22, blob), {
      _tag: "Changed",
      line: 5,
      keyType: "ssh-ed25519"
    })
    assert.strictEqual(tag("revoked.example", 22), "Revoked")
    assert.strictEqual(KnownHosts.entryLine("h", 2200, blob), `[h]:2200 ssh-ed25519 ${encoded}\n`)
  })
})

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "120 seconds", excludeTestServices: true })(
  "connections",
  (it) => {
    describe("failures", () => {
      it.effect("a refused port: ConnectionError refused, after connectAttempts tries", () =>
        Effect.gen(function*() {
          const started = Date.now()
          const error = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: "127.0.0.1:1" }).pipe(
                Settings.settings({ connectAttempts: 3, connectRetryDelay: "300 millis" })
              )
            )
          )
          assert.strictEqual(error.reason, "refused")
          assert.strictEqual(error.port, 1)
          assert.strictEqual(error.user, server.user)
          assert.include(error.message, "127.0.0.1")
          assert.isAtLeast(Date.now() - started, 550)
        }))

      it.effect("an unknown user or a key the server does not know: authentication, not retried", () =>
        Effect.gen(function*() {
          const started = Date.now()
          const unknownUser = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: `nosuchuser@127.0.0.1` }).pipe(
                Settings.settings({ connectAttempts: 3, connectRetryDelay: "5 seconds" })
              )
            )
          )
          assert.strictEqual(unknownUser.reason, "authentication")
          assert.strictEqual(unknownUser.user, "nosuchuser")
          // A retry would first wait 5 s: below that, none was made.
          assert.isBelow(Date.now() - started, 4900)
          const badKey = connectionFailure(
            yield* Effect.exit(remote("true", { host: "127.0.0.1", keyFile: newKey("stranger") }))
          )
          assert.strictEqual(badKey.reason, "authentication")
        }))

      it.effect("a missing or unreadable key file is a SettingsError naming keyFile", () =>
        Effect.gen(function*() {
          const missing = failureOf(
            yield* Effect.exit(remote("true", { host: "127.0.0.1", keyFile: "/nonexistent/key" }))
          )
          assert.isTrue(missing instanceof SettingsError && missing.setting === "keyFile")
          const junk = path.join(temp, "junk-key")
          writeFileSync(junk, "not a key\n")
          const bad = failureOf(yield* Effect.exit(remote("true", { host: "127.0.0.1", keyFile: junk })))
          assert.isTrue(bad instanceof SettingsError && bad.setting === "keyFile")
        }))

      it.effect("connectTimeout: infinity is no limit, not a time-out at once", () =>
        Effect.gen(function*() {
          const result = yield* remote("echo ok", { host: "127.0.0.16" }).pipe(
            Settings.settings({ connectTimeout: Duration.infinity })
          )
          assert.strictEqual(result.stdout, "ok\n")
        }))

      it.effect("an unresolvable host name: unknown-host", () =>
        Effect.gen(function*() {
          const error = connectionFailure(
            yield* Effect.exit(remote("true", { host: "no-such-host.invalid" }))
          )
          assert.strictEqual(error.reason, "unknown-host")
        }))
    })

    it.effect("a session refused at the server's MaxSessions is channel-refused, saying to lower maxChannels", () =>
      Effect.gen(function*() {
        // The throwaway server keeps OpenSSH's MaxSessions 10; 12 commands at once on one
        // connection leave 2 refused for longer than the library waits for a slot to free.
        const exits = yield* Effect.all(
          Array.from({ length: 12 }, () => Effect.exit(remote("sleep 4", { host: "127.0.0.15" }))),
          { concurrency: "unbounded" }
        ).pipe(Settings.settings({ maxChannels: 12 }))
        const failures = exits.filter(Exit.isFailure).map(connectionFailure)
        assert.isAtLeast(failures.length, 1)
        assert.isAtLeast(exits.length - failures.length, 8)
        for (const error of failures) {
          assert.strictEqual(error.reason, "channel-refused")
          assert.include(error.message, "MaxSessions")
          assert.include(error.message, "lower `maxChannels`")
        }
        // the connection itself is fine
        const after = yield* remote("echo ok", { host: "127.0.0.15" })
        assert.strictEqual(after.stdout, "ok\n")
      }))

    describe("host keys", () => {
      it.effect("a changed key is refused (host-key), naming the file and line, whatever the policy", () =>
        Effect.gen(function*() {
          const file = path.join(temp, "known_hosts_changed")
          const other = readFileSync(`${newKey("changed-host")}.pub`, "utf8").split(" ")[1]!
          writeFileSync(file, `# first line\n[127.0.0.4]:${server.port} ssh-ed25519 ${other}\n`)
          for (const hostKeyPolicy of ["strict", "accept-new"] as const) {
            const error = connectionFailure(
              yield* Effect.exit(
                remote("true", { host: "127.0.0.4" }).pipe(
                  Settings.settings({ knownHostsFile: file, hostKeyPolicy })
                )
              )
            )
            assert.strictEqual(error.reason, "host-key")
            assert.include(error.detail, `${file} line 2`)
          }
        }))

      it.effect("an unknown key: strict refuses, accept-new connects and records it", () =>
        Effect.gen(function*() {
          const file = path.join(temp, "sub", "dir", "known_hosts_new")
          const strict = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: "127.0.0.6" }).pipe(
                Settings.settings({ knownHostsFile: file, hostKeyPolicy: "strict" })
              )
            )
          )
          assert.strictEqual(strict.reason, "host-key")
          assert.include(strict.detail, "strict")
          const result = yield* remote("echo ok", { host: "127.0.0.6" }).pipe(
            Settings.settings({ knownHostsFile: file, hostKeyPolicy: "accept-new" })
          )
          assert.strictEqual(result.stdout, "ok\n")
          const recorded = readFileSync(file, "utf8")
          assert.strictEqual(
            recorded,
            `[127.0.0.6]:${server.port} ssh-ed25519 ${hostKeyBlob.toString("base64")}\n`
          )
          // now known: strict accepts it
          const again = yield* remote("echo again", { host: "127.0.0.6" }).pipe(
            Settings.settings({ knownHostsFile: file, hostKeyPolicy: "strict" })
          )
          assert.strictEqual(again.stdout, "again\n")
        }))
    })

    describe("ssh_config and jump hosts", () => {
      it.effect("HostName, User, Port and IdentityFile from a config file", () =>
        Effect.gen(function*() {
          const file = path.join(temp, "ssh_config")
          writeFileSync(
            file,
            `Host app\n  HostName 127.0.0.7\n  User ${server.user}\n  Port ${server.port}\n  IdentityFile ${server.keyPath}\n`
          )
          const result = yield* remote("whoami; echo $SSH_CONNECTION").pipe(
            Settings.settings({
              host: "app",
              sshConfigFile: file,
              user: undefined,
              port: undefined,
              keyFile: undefined
            })
          )
          assert.strictEqual(result.host, "app")
          assert.strictEqual(result.stdoutLines[0], server.user)
          assert.match(result.stdoutLines[1]!, new RegExp(` 127\\.0\\.0\\.7 ${server.port}$`))
          const missing = failureOf(
            yield* Effect.exit(
              remote("true", { host: "app" }).pipe(
                Settings.settings({ sshConfigFile: path.join(temp, "nope") })
              )
            )
          )
          assert.isTrue(missing instanceof SettingsError && missing.setting === "sshConfigFile")
        }))

      it.effect("reaches 127.0.0.3 through the jump host 127.0.0.2 (gateway and ProxyJump)", () =>
        Effect.gen(function*() {
          const log = () => server.readLog()
          const gatewayConnections = () =>
            log().split("\n").filter((l) => l.includes(`on 127.0.0.2 port ${server.port}`)).length
          const before = gatewayConnections()
          const viaGateway = yield* remote("echo $SSH_CONNECTION", {
            host: "127.0.0.3",
            gateway: `${server.user}@127.0.0.2:${server.port}`
          })
          assert.match(viaGateway.stdout, new RegExp(` 127\\.0\\.0\\.3 ${server.port}\\n$`))
          // twice more: the gateway connection is shared
          yield* remote("true", { host: "127.0.0.3", gateway: `${server.user}@127.0.0.2:${server.port}` })
          assert.strictEqual(gatewayConnections(), before + 1)

          const file = path.join(temp, "ssh_config_jump")
          writeFileSync(
            file,
            `Host inner\n  HostName 127.0.0.3\n  ProxyJump jumpbox\nHost jumpbox\n  HostName 127.0.0.2\n  Port ${server.port}\n`
          )
          const viaConfig = yield* remote("echo $SSH_CONNECTION", { host: "inner" }).pipe(
            Settings.settings({ sshConfigFile: file })
          )
          assert.match(viaConfig.stdout, / 127\.0\.0\.3 /)
          assert.isAtLeast(gatewayConnections(), before + 1)
          // the target connection comes from the gateway's sshd, not from us directly
          const direct = log().split("\n").filter((l) => l.includes(`on 127.0.0.3 port ${server.port}`))
          assert.isAbove(direct.length, 0)
        }))

      it.effect("authenticates with ssh-agent", () =>
        Effect.gen(function*() {
          const socket = path.join(temp, "agent.sock")
          const agent = spawnSync("ssh-agent", ["-a", socket, "-s"], { encoding: "utf8" })
          const agentPid = Number(/SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1])
          assert.isAbove(agentPid, 0)
          const previous = process.env["SSH_AUTH_SOCK"]
          yield* Effect.addFinalizer(() =>
            Effect.sync(() => {
              process.kill(agentPid)
              if (previous === undefined) delete process.env["SSH_AUTH_SOCK"]
              else process.env["SSH_AUTH_SOCK"] = previous
            })
          )
          execFileSync("ssh-add", ["-q", server.keyPath], {
            env: { ...process.env, SSH_AUTH_SOCK: socket },
            stdio: "ignore"
          })
          process.env["SSH_AUTH_SOCK"] = socket
          const result = yield* remote("whoami", { host: "127.0.0.8" }).pipe(
            Settings.settings({ keyFile: undefined, useAgent: true })
          )
          assert.strictEqual(result.stdout, `${server.user}\n`)
        }).pipe(Effect.scoped))
    })

    describe("through a gateway", () => {
      const gatewayHop = `${server.user}@127.0.0.2:${server.port}`
      const blackhole = Effect.acquireRelease(
        Effect.promise(() => Blackhole.start()),
        (hole) => Effect.promise(() => hole.close())
      )

      it.effect("connectTimeout bounds the gateway's forward to a target that never answers; the error names the target and the hop", () =>
        Effect.gen(function*() {
          const hole = yield* blackhole
          const started = Date.now()
          const error = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: `127.0.0.1:${hole.port}`, gateway: gatewayHop }).pipe(
                Settings.settings({ connectTimeout: "2 seconds", connectAttempts: 1 })
              )
            )
          )
          const elapsed = Date.now() - started
          assert.strictEqual(error.reason, "timeout")
          assert.strictEqual(error.host, "127.0.0.1")
          assert.strictEqual(error.port, hole.port)
          assert.strictEqual(error.hop, `${gatewayHop} -> 127.0.0.1:${hole.port}`)
          assert.include(error.message, `[127.0.0.1] cannot connect`)
          assert.include(error.message, `at hop ${gatewayHop} -> 127.0.0.1:${hole.port}`)
          // the documented bound: connectTimeout (+ 2 s for the gateway's own connection)
          assert.isBelow(elapsed, 4000)
          // the gateway's connection is still good for other targets
          const next = yield* remote("echo ok", { host: "127.0.0.3", gateway: gatewayHop })
          assert.strictEqual(next.stdout, "ok\n")
        }).pipe(Effect.scoped))

      it.effect("directly, a host that never answers times out within connectTimeout, with no hop", () =>
        Effect.gen(function*() {
          const hole = yield* blackhole
          const started = Date.now()
          const error = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: `127.0.0.1:${hole.port}` }).pipe(
                Settings.settings({ connectTimeout: "1 second", connectAttempts: 1 })
              )
            )
          )
          assert.strictEqual(error.reason, "timeout")
          assert.strictEqual(error.port, hole.port)
          assert.isUndefined(error.hop)
          // the documented bound: connectTimeout per attempt (+ 2 s of slack)
          assert.isBelow(Date.now() - started, 3000)
        }).pipe(Effect.scoped))

      it.effect("a target the gateway cannot reach (refused) names the target and the hop, not the gateway", () =>
        Effect.gen(function*() {
          const error = connectionFailure(
            yield* Effect.exit(remote("true", { host: "127.0.0.3:1", gateway: gatewayHop }))
          )
          assert.strictEqual(error.reason, "refused")
          assert.strictEqual(error.host, "127.0.0.3")
          assert.strictEqual(error.port, 1)
          assert.strictEqual(error.hop, `${gatewayHop} -> 127.0.0.3:1`)
        }))

      it.effect("a gateway that never answers: the error names the target with the gateway as the hop, after the gateway's connectAttempts only", () =>
        Effect.gen(function*() {
          const proxy = yield* Effect.acquireRelease(
            Effect.promise(() => FaultProxy.start({ host: "127.0.0.2", port: server.port })),
            (proxy) => Effect.promise(() => proxy.close())
          )
          proxy.stall()
          const started = Date.now()
          const error = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: "127.0.0.3", gateway: `${server.user}@127.0.0.1:${proxy.port}` }).pipe(
                Settings.settings({
                  connectTimeout: "1 second",
                  connectAttempts: 2,
                  connectRetryDelay: "100 millis"
                })
              )
            )
          )
          const elapsed = Date.now() - started
          assert.strictEqual(error.reason, "timeout")
          assert.strictEqual(error.host, "127.0.0.3")
          assert.strictEqual(error.hop, `${server.user}@127.0.0.1:${proxy.port}`)
          assert.include(error.message, `at hop ${server.user}@127.0.0.1:${proxy.port}`)
          // connectAttempts tries of the gateway, not connectAttempts x connectAttempts
          assert.strictEqual(proxy.statistics.accepted, 2)
          // the bound: connectAttempts x connectTimeout + the delays between them, + 2 s
          assert.isBelow(elapsed, 2 * 1000 + 100 + 2000)
        }).pipe(Effect.scoped))
    })

    describe("an unusable ssh-agent", () => {
      /** Runs `self` with SSH_AUTH_SOCK set to `socket` and HOME to an empty directory (no default keys). */
      const withAgentSocket = <A, E, R>(socket: string, self: Effect.Effect<A, E, R>) =>
        Effect.acquireUseRelease(
          Effect.sync(() => {
            const previous = { sock: process.env["SSH_AUTH_SOCK"], home: process.env["HOME"] }
            process.env["SSH_AUTH_SOCK"] = socket
            process.env["HOME"] = mkdtempSync(path.join(temp, "home-"))
            return previous
          }),
          () => self,
          (previous) =>
            Effect.sync(() => {
              for (
                const [name, value] of [["SSH_AUTH_SOCK", previous.sock], ["HOME", previous.home]] as const
              ) {
                if (value === undefined) delete process.env[name]
                else process.env[name] = value
              }
            })
        )

      /** A unix socket file whose listener is gone: connecting to it is refused. */
      const staleSocket = (): string => {
        const socket = path.join(temp, `stale-agent-${Date.now()}.sock`)
        spawnSync(process.execPath, [
          "-e",
          "require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))",
          socket
        ])
        assert.isTrue(statSync(socket).isSocket())
        return socket
      }

      const sockets = () =>
        [
          ["missing", path.join(temp, "no-such-agent.sock")],
          ["stale", staleSocket()]
        ] as const

      it.effect("a missing or stale SSH_AUTH_SOCK does not stop a key file from being used", () =>
        Effect.gen(function*() {
          for (const [kind, socket] of sockets()) {
            const result = yield* withAgentSocket(
              socket,
              remote("whoami", { host: "127.0.0.13" }).pipe(
                Settings.settings({ useAgent: true, keyFile: server.keyPath, connectAttempts: 3 })
              )
            )
            assert.strictEqual(result.stdout, `${server.user}\n`, kind)
          }
        }))

      it.effect("a missing or stale SSH_AUTH_SOCK does not stop a password login", () =>
        Effect.gen(function*() {
          assert.isDefined(server.passwordUser, "the test server runs as root and has a password user")
          for (const [kind, socket] of sockets()) {
            const result = yield* withAgentSocket(
              socket,
              remote("whoami", { host: `${server.passwordUser}@127.0.0.13` }).pipe(
                Settings.settings({
                  useAgent: true,
                  keyFile: undefined,
                  password: Redacted.make(server.passwordUserPassword!),
                  connectAttempts: 3
                })
              )
            )
            assert.strictEqual(result.stdout, `${server.passwordUser}\n`, kind)
            // a wrong password is an authentication failure (not retried), not a lost connection
            const wrong = connectionFailure(
              yield* Effect.exit(withAgentSocket(
                socket,
                remote("true", { host: `${server.passwordUser}@127.0.0.14` }).pipe(
                  Settings.settings({ useAgent: true, keyFile: undefined, password: Redacted.make("wrong") })
                )
              ))
            )
            assert.strictEqual(wrong.reason, "authentication", kind)
            assert.include(wrong.detail, `the ssh-agent at ${socket} could not be used`, kind)
          }
        }))
    })

    describe("dropped connections", () => {
      it.effect("a connection dropped between two commands is replaced on the next one", () =>
        Effect.gen(function*() {
          const [first, monitor] = yield* sessionPids
          // the server side of the connection goes away: its sshd processes die (the monitor may
          // be gone already, with its session)
          signal(first!, "SIGKILL")
          signal(monitor!, "SIGKILL")
          yield* Effect.sleep("300 millis")
          const [second] = yield* sessionPids
          assert.notStrictEqual(first, second)
          const result = yield* remote("echo still here")
          assert.strictEqual(result.stdout, "still here\n")
        }).pipe(Settings.settings({ host: "127.0.0.10" })))

      it.effect("a connection dropped mid-command fails with ConnectionError disconnected, not a hang", () =>
        Effect.gen(function*() {
          const marker = `tbmark_drop_${process.pid}_${Date.now()}`
          const fiber = yield* Effect.forkChild(
            Effect.exit(remote(`sleep 60; echo ${marker}`, { combineStderr: false }))
          )
          // wait for the command to run, then kill the sshd processes serving it
          let pids: Array<number> = []
          for (let i = 0; i < 100 && pids.length === 0; i++) {
            yield* Effect.sleep("100 millis")
            for (const process of remoteProcesses(marker)) {
              const monitor = remoteProcesses(/sshd/).find((p) => p.pid === parentOf(process.ppid))
              if (monitor !== undefined) pids = [process.ppid, monitor.pid]
            }
          }
          assert.strictEqual(pids.length, 2)
          const started = Date.now()
          for (const pid of pids.reverse()) killIfAlive(pid)
          const exit = yield* Fiber.join(fiber)
          const error = connectionFailure(exit)
          assert.strictEqual(error.reason, "disconnected")
          assert.isBelow(Date.now() - started, 5000)
          const next = yield* remote("echo back")
          assert.strictEqual(next.stdout, "back\n")
        }).pipe(Settings.settings({ host: "127.0.0.11" })))
    })

    it.effect("the layer's scope closes its connections", () =>
      Effect.gen(function*() {
        assert.strictEqual(connectionsTo("127.0.0.12", server.port), 0)
        yield* Effect.scoped(Effect.gen(function*() {
          yield* remote("true", { host: "127.0.0.12" }).pipe(Effect.provide(Layer.fresh(Ssh.layer)))
          yield* remote("true", { host: "127.0.0.12" }).pipe(Effect.provide(Layer.fresh(Ssh.layer)))
        }))
        yield* Effect.sleep("300 millis")
        assert.strictEqual(connectionsTo("127.0.0.12", server.port), 0)
        // while the layer is open, its connection stays up and is shared
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(Layer.fresh(Ssh.layer))
          yield* remote("true", { host: "127.0.0.12" }).pipe(Effect.provideContext(context))
          yield* remote("true", { host: "127.0.0.12" }).pipe(Effect.provideContext(context))
          assert.strictEqual(connectionsTo("127.0.0.12", server.port), 1)
        }))
        yield* Effect.sleep("300 millis")
        assert.strictEqual(connectionsTo("127.0.0.12", server.port), 0)
      }))
  }
)

process.on("exit", () => rmSync(temp, { recursive: true, force: true }))
