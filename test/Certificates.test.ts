/**
 * OpenSSH certificates, against the throwaway server, which presents its host key also as a
 * certificate (HostCertificate) and trusts a user CA (TrustedUserCAKeys).
 *
 * ssh2, the SSH library underneath, has no certificate key types: it cannot ask for a host
 * certificate nor log in with a user certificate. What is tested is that the library says so
 * instead of guessing: a host trusted only through `@cert-authority` is refused with that reason
 * (never taken for an unknown host, never trusted on first use), `@revoked` keys are refused,
 * and a user certificate is named in a warning and in an authentication failure. Every case is
 * compared with what `ssh` itself does with the same files.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { remote } from "../src/internal/remote/operations.ts"
import * as SshConfig from "../src/internal/ssh/config.ts"
import * as KnownHosts from "../src/internal/ssh/knownHosts.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { connectionFailure, settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const certs = server.certificates
const temp = mkdtempSync(path.join(tmpdir(), "threadbare-certs-test-"))
const hostKeyLine = readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!
const [, hostKeyType, hostKeyBase64] = hostKeyLine.split(" ") as [string, string, string]
const hostKeyBlob = Buffer.from(hostKeyBase64, "base64")
const caLine = readFileSync(certs.knownHostsCaPath, "utf8").split("\n")[0]!
const caKey = caLine.split(" ").slice(2).join(" ")

const base = settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true })

const writeTemp = (name: string, text: string): string => {
  const file = path.join(temp, name)
  writeFileSync(file, text)
  return file
}

/** What `ssh` itself does with a key and a known_hosts file: its exit status and output. */
const openssh = (host: string, keyFile: string, knownHosts: string) => {
  const env = { ...process.env }
  delete env["SSH_AUTH_SOCK"]
  const result = spawnSync("ssh", [
    "-F",
    "none",
    "-i",
    keyFile,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-p",
    String(server.port),
    `${server.user}@${host}`,
    "echo certificates-ok"
  ], { env, encoding: "utf8", timeout: 30_000 })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

interface LogEntry {
  readonly level: string
  readonly message: string
}

/**
 * Runs `self` on a connection layer of its own, built under a logger that keeps every entry (a
 * fresh layer: the once-per-file warning is per layer).
 */
const logging = <A, E>(self: Effect.Effect<A, E, Ssh.SshConnections>) =>
  Effect.gen(function*() {
    const logs: Array<LogEntry> = []
    const logger = Logger.make(({ logLevel, message }) => {
      const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
      logs.push({ level: logLevel, message: text })
    })
    const exit = yield* Effect.exit(
      self.pipe(Effect.provide(Layer.mergeAll(Ssh.layer, base)), Effect.provide(Logger.layer([logger])))
    )
    return { exit, logs }
  })

describe("known_hosts markers (pure)", () => {
  const other = Buffer.from(hostKeyBlob)
  other[other.length - 1] = other[other.length - 1]! ^ 1
  const plain = `plain.example ${hostKeyType} ${hostKeyBase64}`

  it("a host covered only by @cert-authority is not unknown: it names the CA line", () => {
    const entries = KnownHosts.parse([
      `@cert-authority *.ca.example ${caKey}`,
      plain
    ].join("\n"))
    assert.deepStrictEqual(KnownHosts.check(entries, "web.ca.example", 22, hostKeyBlob), {
      _tag: "CertificateAuthority",
      line: 1
    })
    assert.strictEqual(KnownHosts.check(entries, "other.example", 22, hostKeyBlob)._tag, "Unknown")
    // A CA line is no recorded key: the algorithms offered stay ssh2's defaults.
    assert.strictEqual(KnownHosts.hostKeyAlgorithms(entries, "web.ca.example", 22), undefined)
  })

  it("a plain key wins over a CA line when it matches, and a differing one is reported as changed", () => {
    const known = KnownHosts.parse(
      `@cert-authority web.example ${caKey}\nweb.example ${hostKeyType} ${hostKeyBase64}`
    )
    assert.strictEqual(KnownHosts.check(known, "web.example", 22, hostKeyBlob)._tag, "Known")
    const changed = KnownHosts.parse(
      `@cert-authority web.example ${caKey}\nweb.example ${hostKeyType} ${other.toString("base64")}`
    )
    assert.deepStrictEqual(KnownHosts.check(changed, "web.example", 22, hostKeyBlob), {
      _tag: "Changed",
      line: 2,
      keyType: hostKeyType
    })
  })

  it("@revoked wins wherever it is, even over the same key listed as plain", () => {
    const revoked = `@revoked * ${hostKeyType} ${hostKeyBase64}`
    for (const [text, line] of [[`${plain}\n${revoked}`, 2], [`${revoked}\n${plain}`, 1]] as const) {
      assert.deepStrictEqual(KnownHosts.check(KnownHosts.parse(text), "plain.example", 22, hostKeyBlob), {
        _tag: "Revoked",
        line
      })
    }
    // Revoking another key leaves this one trusted.
    const elsewhere = KnownHosts.parse(`${plain}\n@revoked * ${hostKeyType} ${other.toString("base64")}`)
    assert.strictEqual(KnownHosts.check(elsewhere, "plain.example", 22, hostKeyBlob)._tag, "Known")
  })

  it("lines with an unknown marker are skipped, as OpenSSH does", () => {
    const entries = KnownHosts.parse(`@cert-authorities plain.example ${caKey}\n@Revoked ${plain}`)
    assert.strictEqual(entries.length, 0)
  })

  it("ssh_config CertificateFile is read (accumulated, tokens expanded) to be named, not used", () => {
    const config = SshConfig.parse(
      "Host web\n  CertificateFile ~/.ssh/%r-cert.pub\nHost *\n  User deploy\n  CertificateFile /etc/ca/all-cert.pub\n"
    )
    const resolved = SshConfig.resolve(config, "web", { localUser: "me", home: "/home/me" })
    assert.deepStrictEqual(resolved.certificateFiles, ["~/.ssh/deploy-cert.pub", "/etc/ca/all-cert.pub"])
  })
})

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "120 seconds", excludeTestServices: true })(
  "against the server with HostCertificate and TrustedUserCAKeys",
  (it) => {
    it.effect("ssh verifies the host certificate with @cert-authority alone; the library refuses, saying why", () =>
      Effect.gen(function*() {
        const host = server.hosts[1]!
        const lineOf = readFileSync(certs.knownHostsCaPath, "utf8").split("\n")
          .findIndex((line) => line.includes(`[${host}]:${server.port} `)) + 1
        const ssh = openssh(host, server.keyPath, certs.knownHostsCaPath)
        assert.strictEqual(ssh.status, 0, ssh.stderr)
        assert.strictEqual(ssh.stdout.trim(), "certificates-ok")

        for (const hostKeyPolicy of ["strict", "accept-new"] as const) {
          // A copy per policy: under accept-new, nothing may be written to it.
          const knownHostsFile = writeTemp(
            `ca-only-${hostKeyPolicy}`,
            readFileSync(certs.knownHostsCaPath, "utf8")
          )
          const before = readFileSync(knownHostsFile, "utf8")
          const error = connectionFailure(
            yield* Effect.exit(
              remote("true", { host }).pipe(Settings.settings({ knownHostsFile, hostKeyPolicy }))
            )
          )
          assert.strictEqual(error.reason, "host-key", hostKeyPolicy)
          assert.include(error.detail, `line ${lineOf} only through a certificate authority`)
          assert.include(error.detail, "ssh2) cannot verify host certificates")
          assert.include(
            error.detail,
            `ssh-keyscan -t ed25519 -p ${server.port} ${host} >> ${knownHostsFile}`
          )
          assert.notInclude(error.detail, "not in")
          assert.strictEqual(
            readFileSync(knownHostsFile, "utf8"),
            before,
            `${hostKeyPolicy}: no key recorded`
          )
        }
      }))

    it.effect("with the plain key recorded (alone, or next to the CA line) the library connects", () =>
      Effect.gen(function*() {
        const host = server.hosts[2]!
        const both = writeTemp(
          "ca-and-plain",
          readFileSync(certs.knownHostsCaPath, "utf8") + readFileSync(server.knownHostsPath, "utf8")
        )
        for (const knownHostsFile of [server.knownHostsPath, both]) {
          const result = yield* remote("echo certificates-ok", { host }).pipe(
            Settings.settings({ knownHostsFile })
          )
          assert.strictEqual(result.stdout.trim(), "certificates-ok", knownHostsFile)
          const ssh = openssh(host, server.keyPath, knownHostsFile)
          assert.strictEqual(ssh.status, 0, ssh.stderr)
        }
      }))

    it.effect("a @revoked host key is refused even when it is also listed as a plain key, as ssh does", () =>
      Effect.gen(function*() {
        const host = server.hosts[3]!
        const plainLines = readFileSync(server.knownHostsPath, "utf8")
        const revoked = `@revoked * ${hostKeyType} ${hostKeyBase64}\n`
        for (
          const [name, text, line] of [
            ["revoked-after", plainLines + revoked, plainLines.trim().split("\n").length + 1],
            ["revoked-before", revoked + plainLines, 1]
          ] as const
        ) {
          const knownHostsFile = writeTemp(name, text)
          const error = connectionFailure(
            yield* Effect.exit(remote("true", { host }).pipe(Settings.settings({ knownHostsFile })))
          )
          assert.strictEqual(error.reason, "host-key", name)
          assert.include(error.detail, `is marked @revoked in ${knownHostsFile} line ${line}`)
          const ssh = openssh(host, server.keyPath, knownHostsFile)
          assert.notStrictEqual(ssh.status, 0, name)
          assert.match(ssh.stderr, /REVOKED/i)
        }
      }))
  }
)

describe("user certificates", () => {
  it.live(
    "a certificate beside an authorized key: the plain key logs in, with one warning naming the file",
    () =>
      Effect.gen(function*() {
        const certificate = `${certs.plusKeyPath}-cert.pub`
        const { exit, logs } = yield* logging(
          Effect.gen(function*() {
            // Two hosts, two connections: the warning is given once for the file.
            for (const host of [server.hosts[4]!, server.hosts[5]!]) {
              const result = yield* remote("echo certificates-ok", { host }).pipe(
                Settings.settings({ keyFile: certs.plusKeyPath })
              )
              assert.strictEqual(result.stdout.trim(), "certificates-ok")
            }
          })
        )
        assert.isTrue(exit._tag === "Success", String(exit))
        const warnings = logs.filter((entry) => entry.level === "Warn" && entry.message.includes(certificate))
        assert.strictEqual(warnings.length, 1, JSON.stringify(logs))
        assert.include(warnings[0]!.message, "cannot authenticate with certificates")
        // ssh offers the certificate and logs in with it (sshd says so in its log).
        const ssh = openssh(server.hosts[4]!, certs.plusKeyPath, server.knownHostsPath)
        assert.strictEqual(ssh.status, 0, ssh.stderr)
      }),
    { timeout: 120_000 }
  )

  it.live(
    "a key that logs in only by its certificate: ssh gets in, the library fails saying why",
    () =>
      Effect.gen(function*() {
        const host = server.hosts[6]!
        const ssh = openssh(host, certs.onlyKeyPath, server.knownHostsPath)
        assert.strictEqual(ssh.status, 0, ssh.stderr)
        assert.strictEqual(ssh.stdout.trim(), "certificates-ok")
        const { exit, logs } = yield* logging(
          remote("true", { host }).pipe(Settings.settings({ keyFile: certs.onlyKeyPath }))
        )
        const error = connectionFailure(exit)
        assert.strictEqual(error.reason, "authentication")
        assert.include(error.detail, `the user certificate ${certs.onlyKeyPath}-cert.pub was not offered`)
        assert.include(error.detail, "does not support certificates")
        assert.isTrue(
          logs.some((entry) => entry.level === "Warn" && entry.message.includes(certs.onlyKeyPath))
        )
      }),
    { timeout: 120_000 }
  )

  it.live("CertificateFile in ssh_config is named in the warning too", () =>
    Effect.gen(function*() {
      const certificate = `${certs.plusKeyPath}-cert.pub`
      const sshConfigFile = writeTemp("ssh_config", `Host *\n  CertificateFile ${certificate}\n`)
      const { exit, logs } = yield* logging(
        remote("echo certificates-ok", { host: server.hosts[7]! }).pipe(Settings.settings({ sshConfigFile }))
      )
      assert.isTrue(exit._tag === "Success", String(exit))
      assert.isTrue(
        logs.some((entry) => entry.level === "Warn" && entry.message.includes(certificate)),
        JSON.stringify(logs)
      )
    }), { timeout: 120_000 })
})
