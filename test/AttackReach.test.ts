/**
 * Attacks on reaching hosts as OpenSSH does, with real parts: the throwaway server, real
 * ssh-agents, real `ssh -G` with hostile configs. Each test is a promise that was attacked; those
 * named "regression" failed before their fix.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { ConnectionError, SettingsError } from "../src/Errors.ts"
import { remote } from "../src/internal/remote/operations.ts"
import type { Target } from "../src/internal/ssh/port.ts"
import { TunnelError } from "../src/internal/ssh/tunnelError.ts"
import * as Rsync from "../src/internal/transfer/rsync.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf, pollUntil, settingsLayer, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()
const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-attack-reach-"))
const fingerprint = execFileSync("ssh-keygen", ["-l", "-f", server.keyPath], { encoding: "utf8" }).split(
  " "
)[1]!

/** A real ssh-agent in the foreground at `socket`, holding the test key when `withKey`. */
const startAgent = (socket: string, withKey: boolean) =>
  Effect.gen(function*() {
    const agent: ChildProcess = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" })
    const up = yield* pollUntil(() => fs.existsSync(socket), 5000)
    assert.isTrue(up, "ssh-agent did not create its socket")
    if (withKey) {
      execFileSync("ssh-add", ["-q", server.keyPath], {
        env: { ...process.env, SSH_AUTH_SOCK: socket },
        stdio: "ignore"
      })
    }
    return agent
  })

const mainSocket = path.join(dir, "main.sock")
const restrictedSocket = path.join(dir, "restricted.sock")

/** The main agent (with the key) at SSH_AUTH_SOCK, and an empty "restricted" one beside it. */
const agentsLayer = Layer.effectDiscard(Effect.acquireRelease(
  Effect.gen(function*() {
    const main = yield* startAgent(mainSocket, true)
    const restricted = yield* startAgent(restrictedSocket, false)
    const previous = process.env["SSH_AUTH_SOCK"]
    process.env["SSH_AUTH_SOCK"] = mainSocket
    return { agents: [main, restricted], previous }
  }),
  ({ agents, previous }) =>
    Effect.sync(() => {
      if (previous === undefined) delete process.env["SSH_AUTH_SOCK"]
      else process.env["SSH_AUTH_SOCK"] = previous
      for (const agent of agents) agent.kill("SIGKILL")
    })
))

const base = settingsLayer({
  user: server.user,
  port: server.port,
  connectAttempts: 1,
  quiet: true,
  useAgent: true
})

/** Log lines of connections accepted on `host`. */
const acceptedOn = (host: string) =>
  server.readLog().split("\n").filter((l) => l.includes(` on ${host} port ${server.port} `)).length

const configFile = (name: string, text: string): string => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  return file
}

// What every config ends with: the test server, strict about its key, our key.
const tail = `
Host *
  Port ${server.port}
  User ${server.user}
  IdentityFile ${server.keyPath}
  UserKnownHostsFile ${server.knownHostsPath}
  StrictHostKeyChecking yes
`

layer(Layer.mergeAll(Ssh.layer, base).pipe(Layer.provideMerge(agentsLayer)), {
  timeout: "120 seconds",
  excludeTestServices: true
})("attacks on reaching hosts", (it) => {
  describe("agent forwarding", () => {
    it.effect("regression: `ForwardAgent <socket>` forwards that socket, never the main agent", () =>
      Effect.gen(function*() {
        const file = configFile(
          "forward-socket",
          `Host 127.0.0.5\n  ForwardAgent ${restrictedSocket}\n${tail}`
        )
        const result = yield* remote("ssh-add -l; echo \"sock=${SSH_AUTH_SOCK:-none}\"", {
          host: "127.0.0.5"
        }).pipe(Settings.settings({ sshConfigFile: file, warnOnly: true }))
        // Forwarded (the remote has a socket), but the agent there is the empty one.
        assert.notInclude(result.stdout, "sock=none")
        assert.notInclude(result.stdout, fingerprint)
        assert.include(result.stdout, "no identities")
        // The same named by an environment variable, as `ForwardAgent $VAR`.
        process.env["TB_RESTRICTED_AGENT"] = restrictedSocket
        const byVariable = configFile(
          "forward-var",
          `Host 127.0.0.5\n  ForwardAgent $TB_RESTRICTED_AGENT\n${tail}`
        )
        const again = yield* remote("ssh-add -l; echo \"sock=${SSH_AUTH_SOCK:-none}\"", {
          host: "127.0.0.5"
        }).pipe(Settings.settings({ sshConfigFile: byVariable, warnOnly: true }))
        assert.notInclude(again.stdout, "sock=none")
        assert.notInclude(again.stdout, fingerprint)
      }))
    it.effect("regression: `IdentitiesOnly yes` keeps the agent out of authentication, not out of forwarding", () =>
      Effect.gen(function*() {
        const file = configFile(
          "identities-only",
          `Host 127.0.0.6\n  IdentitiesOnly yes\n  ForwardAgent yes\nHost 127.0.0.7\n  IdentitiesOnly yes\n${tail}`
        )
        const listKeys = (host: string) =>
          remote("ssh-add -l; echo \"sock=${SSH_AUTH_SOCK:-none}\"", { host }).pipe(
            Settings.settings({ sshConfigFile: file, warnOnly: true })
          )
        // By the config, as `ssh` forwards it.
        const byConfig = yield* listKeys("127.0.0.6")
        assert.include(byConfig.stdout, fingerprint)
        // By the setting.
        const bySetting = yield* listKeys("127.0.0.7").pipe(Settings.settings({ forwardAgent: true }))
        assert.include(bySetting.stdout, fingerprint)
        // Not asked for: nothing.
        const none = yield* listKeys("127.0.0.7")
        assert.include(none.stdout, "sock=none")
      }))
  })

  describe("flags as OpenSSH reads them", () => {
    it.effect("regression: `False`, `YES`, `True` mean what they mean to ssh, by either reader", () =>
      Effect.gen(function*() {
        const file = configFile(
          "flags",
          "Host f\n  HostName 127.0.0.5\n  ForwardAgent False\n  StrictHostKeyChecking YES\n" +
            "Host t\n  HostName 127.0.0.5\n  ForwardAgent True\n  IdentitiesOnly True\n"
        )
        const ssh = yield* Ssh.SshConnections
        for (const sshConfigResolver of ["openssh", "builtin"] as const) {
          const settings = Settings.apply(yield* Settings.Settings, {
            sshConfigFile: file,
            sshConfigResolver,
            useAgent: true,
            hostKeyPolicy: "accept-new",
            quiet: true
          })
          const f = yield* ssh.resolve(Settings.apply(settings, { host: "f" }))
          assert.isUndefined(f.forwardAgent, `${sshConfigResolver}: ForwardAgent False forwarded`)
          assert.isUndefined(f.forwardAgentSocket, sshConfigResolver)
          assert.strictEqual(f.hostKeyPolicy, "strict", sshConfigResolver)
          const t = yield* ssh.resolve(Settings.apply(settings, { host: "t" }))
          assert.isTrue(t.forwardAgent, sshConfigResolver)
          assert.isUndefined(t.agent, `${sshConfigResolver}: IdentitiesOnly True left the agent in`)
          assert.strictEqual(t.forwardAgentSocket, mainSocket, sshConfigResolver)
        }
      }))
  })

  describe("ssh -G", () => {
    it.effect("regression: a `Match exec` that leaves a process behind does not hold the resolution", () =>
      Effect.gen(function*() {
        const file = configFile(
          "match-exec-bg",
          `Match exec "sleep 30 & true"\n  HostName 127.0.0.3\n${tail}`
        )
        const ssh = yield* Ssh.SshConnections
        const settings = Settings.apply(yield* Settings.Settings, { host: "bg", sshConfigFile: file })
        const started = Date.now()
        const target = yield* ssh.resolve(settings)
        const took = Date.now() - started
        assert.strictEqual(target.host, "127.0.0.3")
        assert.isBelow(took, 3000, `resolving took ${took} ms`)
      }))
  })

  describe("ssh -G, hanging", () => {
    it.effect(
      "a `Match exec` that hangs is bounded, and it and its children are killed",
      () =>
        Effect.gen(function*() {
          const sleeper = `sleep 600.${Math.floor(Math.random() * 1e6)}`
          const file = configFile(
            "match-exec-hang",
            `Match exec "trap '' TERM; ${sleeper} & wait"\n  HostName 127.0.0.3\n${tail}`
          )
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, { host: "hang", sshConfigFile: file })
          const started = Date.now()
          const error = failureOf(yield* Effect.exit(ssh.resolve(settings)))
          assert.instanceOf(error, SettingsError)
          assert.include(error.message, "did not answer")
          assert.isBelow(Date.now() - started, 15_000)
          assert.isTrue(yield* waitForProcesses(sleeper, false, 3), "the Match exec command outlived it")
        }),
      30_000
    )
  })

  describe("ssh -G, flooded", () => {
    it.effect(
      "regression: a `Match exec` that floods stderr is bounded in memory, and stopped",
      () =>
        Effect.gen(function*() {
          const file = configFile(
            "match-exec-flood",
            `Match exec "yes flood >&2"\n  HostName 127.0.0.3\n${tail}`
          )
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, { host: "flood", sshConfigFile: file })
          const before = process.memoryUsage().rss
          let peak = before
          const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50)
          const exit = yield* Effect.exit(ssh.resolve(settings)).pipe(
            Effect.ensuring(Effect.sync(() => clearInterval(sampler)))
          )
          assert.isTrue(exit._tag === "Failure")
          assert.isBelow(
            peak - before,
            64 * 1024 * 1024,
            `rss grew by ${Math.round((peak - before) / 1e6)} MB`
          )
          assert.isTrue(yield* waitForProcesses("yes flood", false, 3))
        }),
      30_000
    )
  })

  describe("rsync", () => {
    it.effect("regression: rsync reaches a jump host through the jump host's own ProxyCommand, as commands do", () =>
      Effect.gen(function*() {
        const work = fs.mkdtempSync(path.join(tmpdir(), "tb-attack-rsync-hop-"))
        fs.chmodSync(work, 0o777)
        fs.writeFileSync(path.join(work, "a.txt"), "via the hop's command\n")
        // `tbgw` resolves nowhere: only its ProxyCommand (an ssh -W through 127.0.0.8) reaches it.
        const reachGateway = [
          "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes",
          `-o UserKnownHostsFile=${server.knownHostsPath} -i ${server.keyPath}`,
          `-p ${server.port} -l ${server.user} -W 127.0.0.9:${server.port} 127.0.0.8`
        ].join(" ")
        const file = configFile(
          "hop-proxy",
          `Host tbgw\n  ProxyCommand ${reachGateway}\nHost 127.0.0.10\n  ProxyJump tbgw\n` +
            `Host *\n  Port ${server.port}\n  User ${server.user}\n  IdentityFile ${server.keyPath}\n`
        )
        const settings = Settings.settings({
          host: "127.0.0.10",
          sshConfigFile: file,
          knownHostsFile: path.join(work, "known_hosts"),
          hostKeyPolicy: "accept-new"
        })
        const viaCommands = yield* remote("echo $SSH_CONNECTION").pipe(settings)
        assert.match(viaCommands.stdout, / 127\.0\.0\.10 /)
        yield* Transfer.rsyncUpload(`${work}/a.txt`, `${work}/out/`).pipe(
          settings,
          Effect.provide(NodeServices.layer)
        )
        assert.strictEqual(
          fs.readFileSync(path.join(work, "out", "a.txt"), "utf8"),
          "via the hop's command\n"
        )
        fs.rmSync(work, { recursive: true, force: true })
      }))
  })

  describe("known_hosts", () => {
    it.effect("regression: a key recorded in the 2nd UserKnownHostsFile is checked: a different one is refused, not trusted anew", () =>
      Effect.gen(function*() {
        const work = fs.mkdtempSync(path.join(dir, "kh-"))
        const first = path.join(work, "first")
        const second = path.join(work, "second")
        // The second file records another key for the host: whoever answers with the real one now
        // is, for OpenSSH, a changed host key.
        const other = path.join(work, "other")
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other])
        const otherKey = fs.readFileSync(`${other}.pub`, "utf8").split(" ").slice(0, 2).join(" ")
        fs.writeFileSync(second, `[127.0.0.11]:${server.port} ${otherKey}\n`)
        const file = configFile(
          "two-known-hosts",
          `Host 127.0.0.11\n  UserKnownHostsFile ${first} ${second}\n` +
            `Host *\n  Port ${server.port}\n  User ${server.user}\n  IdentityFile ${server.keyPath}\n`
        )
        // The config's files, under the default policy: settings given in code would win over them.
        const byConfig = Settings.settings({
          sshConfigFile: file,
          knownHostsFile: Settings.defaults.knownHostsFile,
          hostKeyPolicy: "accept-new"
        })
        const exit = yield* Effect.exit(
          remote("true", { host: "127.0.0.11" }).pipe(byConfig)
        )
        const error = failureOf(exit)
        assert.instanceOf(error, ConnectionError)
        assert.strictEqual((error as ConnectionError).reason, "host-key")
        assert.include(error.message, second)
        // Nothing recorded in the first file either.
        assert.isFalse(fs.existsSync(first) && fs.readFileSync(first, "utf8").includes("127.0.0.11"))
        // The same host key as the server's, recorded in the second file only: known.
        fs.writeFileSync(
          second,
          fs.readFileSync(server.knownHostsPath, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) =>
            `[127.0.0.11]:${server.port} ${l.split(" ").slice(1).join(" ")}`
          ).join("\n") + "\n"
        )
        const ok = yield* remote("echo ok", { host: "127.0.0.11" }).pipe(
          byConfig
        )
        assert.strictEqual(ok.stdout.trim(), "ok")
        assert.isFalse(fs.existsSync(first), "a host known from the second file is not recorded again")
      }))
  })

  describe("known_hosts, named with a space", () => {
    it.effect("regression: a UserKnownHostsFile whose path holds a space is the file checked", () =>
      Effect.gen(function*() {
        const work = fs.mkdtempSync(path.join(dir, "kh space-"))
        const file = path.join(work, "my hosts", "known_hosts")
        fs.mkdirSync(path.dirname(file))
        const other = path.join(work, "other")
        execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other])
        const otherKey = fs.readFileSync(`${other}.pub`, "utf8").split(" ").slice(0, 2).join(" ")
        fs.writeFileSync(file, `[127.0.0.11]:${server.port} ${otherKey}\n`)
        const config = configFile(
          "spaced-known-hosts",
          `Host 127.0.0.11\n  UserKnownHostsFile "${file}"\n` +
            `Host *\n  Port ${server.port}\n  User ${server.user}\n  IdentityFile ${server.keyPath}\n`
        )
        for (const sshConfigResolver of ["openssh", "builtin"] as const) {
          const exit = yield* Effect.exit(
            remote("true", { host: "127.0.0.11" }).pipe(Settings.settings({
              sshConfigFile: config,
              sshConfigResolver,
              knownHostsFile: Settings.defaults.knownHostsFile,
              hostKeyPolicy: "accept-new"
            }))
          )
          const error = failureOf(exit)
          assert.instanceOf(error, ConnectionError, sshConfigResolver)
          assert.strictEqual((error as ConnectionError).reason, "host-key", sshConfigResolver)
          assert.include(error.message, file)
        }
        assert.isFalse(fs.existsSync(path.join(work, "my")), "a key was recorded in a file cut at the space")
      }))
  })

  describe("ProxyCommand", () => {
    it.effect("one that closes its output but runs on, ignoring SIGTERM, fails at once and is killed", () =>
      Effect.gen(function*() {
        const sleeper = `sleep 600.${Math.floor(Math.random() * 1e6)}`
        const started = Date.now()
        const exit = yield* Effect.exit(
          remote("true", { host: "127.0.0.10" }).pipe(
            Settings.settings({
              proxyCommand: `sh -c 'trap "" TERM; exec >&-; ${sleeper}'`,
              connectTimeout: "30 seconds"
            })
          )
        )
        const error = failureOf(exit)
        assert.instanceOf(error, ConnectionError)
        assert.isBelow(Date.now() - started, 5000, "waited for connectTimeout")
        assert.isTrue(yield* waitForProcesses(sleeper, false, 5), "the command outlived its connection")
      }))
  })

  describe("jump hosts", () => {
    it.effect("a gateway connection shared with direct commands, killed on the server: the next command through it reconnects", () =>
      Effect.gen(function*() {
        const gateway = `${server.user}@127.0.0.13:${server.port}`
        const through = Settings.settings({ host: "127.0.0.12", gateway })
        const before = acceptedOn("127.0.0.13")
        const first = yield* remote("echo $SSH_CONNECTION").pipe(through)
        assert.match(first.stdout, / 127\.0\.0\.12 /)
        // A command on the gateway itself shares its connection (one login there for both).
        const pids = yield* remote("echo $PPID", { host: "127.0.0.13" })
        assert.strictEqual(acceptedOn("127.0.0.13"), before + 1)
        const sessionPid = Number(pids.stdout.trim())
        const stat = fs.readFileSync(`/proc/${sessionPid}/stat`, "utf8")
        const monitor = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
        // The monitor may go with its child first.
        for (const pid of [monitor, sessionPid]) {
          try {
            process.kill(pid, "SIGKILL")
          } catch (error) {
            if ((error as { code?: string }).code !== "ESRCH") throw error
          }
        }
        yield* Effect.sleep("300 millis")
        const started = Date.now()
        const again = yield* remote("echo again").pipe(through)
        assert.strictEqual(again.stdout, "again\n")
        assert.isBelow(Date.now() - started, 5000)
        assert.strictEqual(acceptedOn("127.0.0.13"), before + 2)
      }))
  })

  describe("tunnels", () => {
    it.effect("regression: an empty listen address is refused, never taken as every interface", () =>
      Effect.gen(function*() {
        for (const localHost of ["", " "]) {
          const exit = yield* Effect.exit(Effect.scoped(
            Ssh.forwardLocal({ localHost, remoteHost: "127.0.0.1", remotePort: server.port })
          ))
          const error = failureOf(exit)
          assert.instanceOf(error, TunnelError, `localHost ${JSON.stringify(localHost)}`)
          assert.strictEqual((error as TunnelError).reason, "bind")
        }
        const remoteExit = yield* Effect.exit(Effect.scoped(
          Ssh.forwardRemote({ remoteHost: "", remotePort: 0, localPort: server.port })
        ))
        const remoteError = failureOf(remoteExit)
        assert.instanceOf(remoteError, TunnelError)
        assert.strictEqual((remoteError as TunnelError).reason, "bind")
      }).pipe(Settings.settings({ host: "127.0.0.5" })))

    it.effect("a forward closed with a connection held open gives its port back at once, both ways", () =>
      Effect.gen(function*() {
        // An echo server here: what the forwards lead to.
        const echo = yield* Effect.acquireRelease(
          Effect.callback<net.Server>((resume) => {
            const listener = net.createServer((socket) => socket.pipe(socket))
            listener.listen(0, "127.0.0.1", () => resume(Effect.succeed(listener)))
          }),
          (listener) => Effect.sync(() => void listener.close())
        )
        const echoPort = (echo.address() as net.AddressInfo).port
        // A client that connects and never reads nor closes.
        const hold = (port: number) =>
          Effect.callback<net.Socket>((resume) => {
            const socket = net.connect({ host: "127.0.0.1", port }, () => resume(Effect.succeed(socket)))
            socket.on("error", () => {})
          })
        const local = yield* Effect.scoped(Effect.gen(function*() {
          const port = yield* Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: echoPort })
          const held = yield* hold(port)
          held.write("x".repeat(1024 * 1024))
          yield* Effect.sleep("200 millis")
          return port
        }))
        const again = yield* Effect.scoped(
          Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: echoPort, localPort: local })
        )
        assert.strictEqual(again, local)
        const remotePort = yield* Effect.scoped(Effect.gen(function*() {
          const port = yield* Ssh.forwardRemote({ remotePort: 0, localPort: echoPort })
          yield* remote(`exec 3<>/dev/tcp/127.0.0.1/${port}; echo hi >&3; sleep 30 >/dev/null 2>&1 &`).pipe(
            Effect.timeout("5 seconds")
          )
          return port
        }))
        const remoteAgain = yield* Effect.scoped(Ssh.forwardRemote({ remotePort, localPort: echoPort }))
        assert.strictEqual(remoteAgain, remotePort)
      }).pipe(Settings.settings({ host: "127.0.0.5" })))
  })
})

describe("rsync's ssh", () => {
  it("checks every known_hosts file the target checks, writing to the first", () => {
    const target = {
      label: "web",
      host: "10.0.0.5",
      port: 22,
      user: "deploy",
      keyFile: undefined,
      knownHostsFile: "/k/first",
      otherKnownHostsFiles: ["/k/second file"],
      hostKeyPolicy: "accept-new",
      gateway: undefined
    } as unknown as Target
    const line = Rsync.sshCommand(target, 10)
    assert.include(line, `'UserKnownHostsFile="/k/first" "/k/second file"'`)
  })
})
