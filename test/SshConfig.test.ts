/**
 * ssh_config resolved as OpenSSH resolves it. A table of configs, each run twice against the
 * throwaway server: by the real `ssh` client (`ssh -F cfg -o BatchMode=yes host ...`) and by the
 * library with the same config; both must log in as the same user, at the same server address and
 * port. Then the built-in reader (no OpenSSH client) naming what it cannot apply, and the pure
 * parsing of `ssh -G`'s output.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import * as SshConfig from "../src/internal/ssh/config.ts"
import * as SshG from "../src/internal/ssh/sshG.ts"
import { makeResolver } from "../src/internal/ssh/target.ts"
import { remote } from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf, settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-sshconfig-"))
const otherUser = server.passwordUser ?? server.user

// One copy of the test key per login user, named after the user: `IdentityFile <dir>/keys/%r`
// in every config only works when `%r` is expanded to the user ssh logs in as.
for (const user of new Set([server.user, otherUser])) {
  fs.mkdirSync(path.join(dir, "keys"), { recursive: true })
  fs.copyFileSync(server.keyPath, path.join(dir, "keys", user))
  fs.chmodSync(path.join(dir, "keys", user), 0o600)
}
// The same key again under a name made of %h and %p, for the case that expands them.
fs.copyFileSync(server.keyPath, path.join(dir, "keys", `127.0.0.13_${server.port}`))
fs.chmodSync(path.join(dir, "keys", `127.0.0.13_${server.port}`), 0o600)
// A known_hosts that knows the server's key only under an alias.
const hostKey = fs.readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!.split(" ").slice(1, 3).join(
  " "
)
fs.writeFileSync(path.join(dir, "alias_known_hosts"), `tb-alias ${hostKey}\n`)
fs.writeFileSync(path.join(dir, "included.conf"), `Host inc\n  HostName 127.0.0.6\n  User ${otherUser}\n`)

// Last in every config: what applies to all hosts, strict about host keys.
const tail = `
Host *
  Port ${server.port}
  User ${server.user}
  IdentityFile ${dir}/keys/%r
  UserKnownHostsFile ${server.knownHostsPath}
  StrictHostKeyChecking yes
  IdentitiesOnly yes
`

interface Case {
  readonly name: string
  readonly config: string
  readonly host: string
  /** Given in code (`ssh -l`/`-p`), winning over the config. */
  readonly user?: string
  readonly port?: number
}

const cases: ReadonlyArray<Case> = [
  { name: "HostName from a Host block", config: "Host app\n  HostName 127.0.0.5\n", host: "app" },
  { name: "Include of another file", config: `Include ${dir}/included.conf\n`, host: "inc" },
  { name: "Match host", config: "Match host m1\n  HostName 127.0.0.7\n", host: "m1" },
  {
    name: "Match user (the user given in code)",
    config: `Match user ${otherUser}\n  HostName 127.0.0.9\nHost mu\n  HostName 127.0.0.8\n`,
    host: "mu",
    user: otherUser
  },
  { name: "Match exec", config: "Match exec \"test %h = mx\"\n  HostName 127.0.0.10\n", host: "mx" },
  {
    name: "wildcard",
    config: "Host w* !wx\n  HostName 127.0.0.11\nHost wx\n  HostName 127.0.0.12\n",
    host: "w1"
  },
  {
    name: "negation",
    config: "Host w* !wx\n  HostName 127.0.0.11\nHost wx\n  HostName 127.0.0.12\n",
    host: "wx"
  },
  {
    name: "tokens %h and %p in HostName and IdentityFile",
    config: `Host 13\n  HostName 127.0.0.%h\n  IdentityFile ${dir}/keys/%h_%p\n`,
    host: "13"
  },
  {
    name: "ProxyJump none (the first value wins)",
    config: "Host pj\n  HostName 127.0.0.14\n  ProxyJump none\nHost pj\n  ProxyJump nowhere.invalid\n",
    host: "pj"
  },
  {
    name: "ProxyJump through a hop",
    config: "Host via\n  HostName 127.0.0.15\n  ProxyJump 127.0.0.2\n",
    host: "via"
  },
  {
    name: "HostKeyAlias (known only under the alias)",
    config:
      `Host ka\n  HostName 127.0.0.16\n  HostKeyAlias tb-alias\n  UserKnownHostsFile ${dir}/alias_known_hosts\n`,
    host: "ka"
  },
  {
    name: "User and Port given in code win",
    config: "Host ov\n  HostName 127.0.0.4\n  Port 1\n  User nobody\n",
    host: "ov",
    user: otherUser,
    port: server.port
  },
  {
    name: "Port and User from the config",
    config: `Host pu\n  HostName 127.0.0.3\n  User ${otherUser}\n  Port ${server.port}\n`,
    host: "pu"
  }
]

const command = "echo $USER $SSH_CONNECTION"

/** user, server address, server port, from `echo $USER $SSH_CONNECTION`. */
const route = (output: string): string => {
  const [user, , , address, port] = output.trim().split(/\s+/)
  return `${user}@${address}:${port}`
}

const configFile = (c: Case, index: number): string => {
  const file = path.join(dir, `config-${index}`)
  fs.writeFileSync(file, c.config + tail)
  return file
}

const byOpenSsh = (c: Case, file: string): string => {
  const result = spawnSync("ssh", [
    "-F",
    file,
    "-o",
    "BatchMode=yes",
    ...(c.user === undefined ? [] : ["-l", c.user]),
    ...(c.port === undefined ? [] : ["-p", String(c.port)]),
    c.host,
    command
  ], { encoding: "utf8", timeout: 30_000 })
  assert.strictEqual(result.status, 0, `ssh failed for ${c.name}: ${result.stderr}`)
  return route(result.stdout)
}

// Nothing of the test support's key, user or known_hosts: the config decides.
const base = settingsLayer({
  connectAttempts: 1,
  quiet: true,
  capture: true,
  keyFile: undefined,
  user: undefined,
  port: undefined,
  knownHostsFile: Settings.defaults.knownHostsFile,
  hostKeyPolicy: "accept-new"
})

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "300 seconds",
  excludeTestServices: true
})(
  "SshConfig",
  (it) => {
    describe("the same user, address and port as ssh, for each config", () => {
      cases.forEach((c, index) => {
        it.effect(c.name, () =>
          Effect.gen(function*() {
            const file = configFile(c, index)
            const expected = byOpenSsh(c, file)
            const result = yield* remote(command).pipe(
              Settings.settings({
                host: c.host,
                sshConfigFile: file,
                sshConfigResolver: "openssh",
                ...(c.user === undefined ? {} : { user: c.user }),
                ...(c.port === undefined ? {} : { port: c.port })
              })
            )
            assert.strictEqual(route(result.stdout), expected)
          }))
      })
    })

    describe("mapped onto the target", () => {
      it.effect("ssh_config options become target fields; settings given in code win", () =>
        Effect.gen(function*() {
          const file = path.join(dir, "mapped")
          fs.writeFileSync(
            file,
            `Host mapped\n  HostName 127.0.0.5\n  ConnectTimeout 7\n  ServerAliveInterval 5\n  ServerAliveCountMax 9\n` +
              `  ForwardAgent yes\n  ProxyCommand nc %h %p # %r %n %%\n  StrictHostKeyChecking yes\n` +
              `  UserKnownHostsFile ${dir}/kh_%h\n  IdentityAgent none\n  Port ${server.port}\n  User ${server.user}\n`
          )
          const ssh = yield* Ssh.SshConnections
          const current = yield* Settings.Settings
          const settings = Settings.apply(current, { host: "mapped", sshConfigFile: file, useAgent: true })
          const target = yield* ssh.resolve(settings)
          assert.strictEqual(target.host, "127.0.0.5")
          assert.strictEqual(Duration.toMillis(target.connectTimeout), 7000)
          assert.strictEqual(Duration.toMillis(target.keepaliveInterval), 5000)
          assert.strictEqual(target.keepaliveCountMax, 9)
          // `ForwardAgent yes`, but `IdentityAgent none`: no agent, so nothing to forward (as ssh).
          assert.isUndefined(target.forwardAgent)
          // As written: its tokens are expanded when connecting (test/ProxyCommand.test.ts).
          assert.strictEqual(target.proxyCommand, "nc %h %p # %r %n %%")
          assert.strictEqual(target.hostKeyPolicy, "strict")
          assert.strictEqual(target.knownHostsFile, `${dir}/kh_127.0.0.5`)
          assert.isUndefined(target.agent)
          const given = yield* ssh.resolve(
            Settings.apply(settings, {
              connectTimeout: "3 seconds",
              knownHostsFile: `${dir}/mine`,
              port: 2200
            })
          )
          assert.strictEqual(Duration.toMillis(given.connectTimeout), 3000)
          assert.strictEqual(given.knownHostsFile, `${dir}/mine`)
          assert.strictEqual(given.port, 2200)
          // ProxyCommand `none`, and a gateway given in code is the route.
          const viaGateway = yield* ssh.resolve(Settings.apply(settings, { gateway: "127.0.0.2" }))
          assert.isUndefined(viaGateway.proxyCommand)
        }))

      it.effect("a config ssh refuses is a SettingsError naming the file and ssh's message", () =>
        Effect.gen(function*() {
          const file = path.join(dir, "broken")
          fs.writeFileSync(file, "Host broken\n  NoSuchKeyword yes\n")
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, { host: "broken", sshConfigFile: file })
          const error = failureOf(yield* Effect.exit(ssh.resolve(settings)))
          assert.isTrue(error instanceof SettingsError)
          assert.strictEqual((error as SettingsError).value, file)
          assert.include(error.message, "line 2")
          assert.include(error.message, "nosuchkeyword")
        }))

      it.effect("an edit of the config file counts from the next resolution", () =>
        Effect.gen(function*() {
          const file = path.join(dir, "edited")
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, { host: "e", sshConfigFile: file })
          fs.writeFileSync(file, "Host e\n  HostName 127.0.0.1\n")
          assert.strictEqual((yield* ssh.resolve(settings)).host, "127.0.0.1")
          fs.writeFileSync(file, "Host e\n  HostName 127.0.0.22\n")
          assert.strictEqual((yield* ssh.resolve(settings)).host, "127.0.0.22")
        }))
    })

    describe("ssh -G's answers", () => {
      it.effect("are asked once per host, and the oldest are dropped past the layer's bound", () =>
        Effect.gen(function*() {
          // `Match exec` runs once per `ssh -G`, so its log counts the questions asked.
          const log = path.join(dir, "asked.log")
          const file = path.join(dir, "counted")
          fs.writeFileSync(log, "")
          fs.writeFileSync(file, `Match exec "echo %n >> ${log}"\n  Port 2200\n`)
          const resolve = makeResolver(3)
          const asked = () => fs.readFileSync(log, "utf8").split("\n").filter((line) => line !== "")
          const settings = Settings.apply(yield* Settings.Settings, { sshConfigFile: file })
          const at = (host: string) => resolve({ ...settings, host })
          for (const host of ["h0", "h1", "h0", "h2", "h1", "h0"]) {
            assert.strictEqual((yield* at(host)).port, 2200)
          }
          assert.deepStrictEqual(asked(), ["h0", "h1", "h2"], "each host asked once while all are kept")
          yield* at("h3") // a fourth answer: h0, the oldest, goes
          yield* at("h2")
          yield* at("h0")
          assert.deepStrictEqual(asked(), ["h0", "h1", "h2", "h3", "h0"])
        }))
    })

    describe("the built-in reader names what it cannot apply", () => {
      const builtin = (file: string, host: string) =>
        Effect.gen(function*() {
          const ssh = yield* Ssh.SshConnections
          const settings = Settings.apply(yield* Settings.Settings, {
            host,
            sshConfigFile: file,
            sshConfigResolver: "builtin"
          })
          return yield* ssh.resolve(settings)
        })

      it.effect("Include and Match that could change the result are SettingsErrors with file and line", () =>
        Effect.gen(function*() {
          const include = path.join(dir, "builtin-include")
          fs.writeFileSync(
            include,
            `# all hosts\nInclude ${dir}/included.conf\nHost x\n  HostName 127.0.0.5\n`
          )
          const first = failureOf(yield* Effect.exit(builtin(include, "x")))
          assert.isTrue(first instanceof SettingsError)
          assert.include(first.message, `${include} line 2`)
          assert.include(first.message, "Include")

          const match = path.join(dir, "builtin-match")
          fs.writeFileSync(match, "Host x\n  HostName 127.0.0.5\n\nMatch user deploy\n  User deploy\n")
          const second = failureOf(yield* Effect.exit(builtin(match, "x")))
          assert.include(second.message, `${match} line 4`)
          assert.include(second.message, "Match user deploy")
        }))

      it.effect("other directives are warnings naming the file and line, once per layer", () =>
        Effect.gen(function*() {
          const file = path.join(dir, "builtin-warn")
          fs.writeFileSync(
            file,
            "Host x\n  HostName 127.0.0.5\n  Compression yes\n  ProxyCommand nc %h %p\nMatch host y\n  Compression no\n"
          )
          const warnings: Array<string> = []
          const logger = Logger.make(({ logLevel, message }) => {
            if (logLevel === "Warn") warnings.push((Array.isArray(message) ? message : [message]).join(" "))
          })
          const target = yield* builtin(file, "x").pipe(Effect.provide(Logger.layer([logger])))
          yield* builtin(file, "x").pipe(Effect.provide(Logger.layer([logger])))
          assert.strictEqual(target.host, "127.0.0.5")
          assert.strictEqual(target.proxyCommand, "nc %h %p")
          assert.deepStrictEqual(warnings, [
            `ssh_config ${file} line 3: \`compression\` not applied by the built-in ssh_config reader (install the OpenSSH client to have it resolved by \`ssh -G\`)`,
            `ssh_config ${file} line 6: \`compression\` not applied by the built-in ssh_config reader (install the OpenSSH client to have it resolved by \`ssh -G\`)`,
            `ssh_config ${file} line 5: \`match\` \`Match host y\` is not evaluated by the built-in ssh_config reader`
          ])
        }))

      it.effect("ssh is looked for on PATH", () =>
        Effect.sync(() => {
          assert.isUndefined(SshG.findSsh(path.join(dir, "keys")))
          assert.strictEqual(SshG.findSsh("/usr/bin"), "/usr/bin/ssh")
        }))
    })
  }
)

describe("ssh -G output", () => {
  it("keywords lowercased, every value kept in order", () => {
    const options = SshG.parseOutput(
      "host web\nUser deploy\nhostname 10.0.0.5\nport 2222\nidentityfile ~/.ssh/a\nidentityfile ~/.ssh/b\n" +
        "proxycommand ssh -W %h:%p bastion\nuserknownhostsfile /k1 /k2\n\n"
    )
    assert.deepStrictEqual(options.get("user"), ["deploy"])
    assert.deepStrictEqual(options.get("identityfile"), ["~/.ssh/a", "~/.ssh/b"])
    assert.deepStrictEqual(options.get("proxycommand"), ["ssh -W %h:%p bastion"])
    assert.deepStrictEqual(options.get("userknownhostsfile"), ["/k1 /k2"])
    assert.isUndefined(options.get(""))
  })

  it("the arguments: -F, -l and -p only when given, the host after --", () => {
    assert.deepStrictEqual(
      SshG.argumentsOf({ ssh: "ssh", configFile: "/c", host: "-oProxyCommand=x", user: "u", port: 2 }),
      ["-G", "-F", "/c", "-l", "u", "-p", "2", "--", "-oProxyCommand=x"]
    )
    assert.deepStrictEqual(
      SshG.argumentsOf({ ssh: "ssh", configFile: undefined, host: "h", user: undefined, port: undefined }),
      ["-G", "--", "h"]
    )
  })

  it("the built-in lookup: first value wins, IdentityFile accumulates, Include in reach is fatal", () => {
    const config = SshConfig.parse(
      "Host a\n  User one\n  IdentityFile k1\nHost *\n  User two\n  IdentityFile k2\n"
    )
    const { options, problems } = SshConfig.lookup(config, "a")
    assert.deepStrictEqual(options.get("user"), ["one"])
    assert.deepStrictEqual(options.get("identityfile"), ["k1", "k2"])
    assert.deepStrictEqual(problems, [])
    const included = SshConfig.lookup(SshConfig.parse("Host b\n  Include other\nHost a\n  User x\n"), "a")
    assert.deepStrictEqual(included.problems, [])
    assert.isTrue(SshConfig.lookup(SshConfig.parse("Host b\n  Include other\n"), "b").problems[0]!.fatal)
  })
})

// ssh itself checks the copies' permissions: fail loudly here rather than in every case.
execFileSync("ssh-keygen", ["-y", "-f", path.join(dir, "keys", server.user)])
