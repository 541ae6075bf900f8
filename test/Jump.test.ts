/**
 * Jump chains against the throwaway OpenSSH server (every loopback host is the same sshd): a
 * `gateway` list of hops, nested ProxyJump from ssh_config compared with what `ssh` itself does,
 * each hop connected once and shared, each bounded by connectTimeout, and errors that name the
 * hop that failed.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import { remote } from "../src/internal/remote/operations.ts"
import type * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { Blackhole } from "../tests-remote/faultProxy.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { connectionFailure, failureOf, settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const temp = mkdtempSync(path.join(tmpdir(), "threadbare-jump-test-"))
const hop = (host: string, user = server.user) => `${user}@${host}:${server.port}`

/** A fresh connection service per test: connections counted in a test are that test's. */
const withSsh = (patch: Settings.Patch) =>
  Effect.provide(
    Layer.mergeAll(
      Ssh.layer,
      settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true, ...patch })
    )
  )

/** Connections sshd accepted on `host` so far (its log says `... on <host> port <port>`). */
const acceptedOn = (host: string) =>
  server.readLog().split("\n").filter((l) => l.includes(` on ${host} port ${server.port} `)).length

/** The TCP connections this process (not the sshd forwarding for it) has open to `host`. */
const ourConnectionsTo = (host: string): number => {
  const inodes = new Set(
    readdirSync("/proc/self/fd").flatMap((fd) => {
      const link = (() => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`)
        } catch {
          return ""
        }
      })()
      const match = /^socket:\[(\d+)\]$/.exec(link)
      return match === null ? [] : [match[1]!]
    })
  )
  const hex = host.split(".").map((n) => Number(n).toString(16).padStart(2, "0").toUpperCase()).reverse()
    .join("")
  const address = `${hex}:${server.port.toString(16).toUpperCase().padStart(4, "0")}`
  return readFileSync("/proc/net/tcp", "utf8").split("\n").filter((line) => {
    const fields = line.trim().split(/\s+/)
    return fields[2] === address && fields[3] === "01" && inodes.has(fields[9]!)
  }).length
}

describe("jump chains", () => {
  it.live(
    "gateway a,b reaches the host through both, each hop connected once and shared by the targets behind it",
    () =>
      Effect.gen(function*() {
        const before = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"].map(acceptedOn)
        const chain = `${hop("127.0.0.11")},${hop("127.0.0.12")}`
        const seen = yield* Effect.gen(function*() {
          const results = yield* Effect.all(
            [
              remote("echo $SSH_CONNECTION", { host: "127.0.0.13" }),
              remote("echo $SSH_CONNECTION", { host: "127.0.0.14" }),
              remote("true", { host: "127.0.0.13" }),
              remote("true", { host: "127.0.0.14" })
            ],
            { concurrency: "unbounded" }
          )
          // only the first hop is ours; the others are forwarded by the sshd before them
          assert.strictEqual(ourConnectionsTo("127.0.0.11"), 1)
          assert.strictEqual(ourConnectionsTo("127.0.0.12"), 0)
          assert.strictEqual(ourConnectionsTo("127.0.0.13"), 0)
          return results.slice(0, 2).map((r) => r.stdout.trim().split(" ")[2])
        }).pipe(withSsh({ gateway: chain }))
        assert.deepStrictEqual(seen, ["127.0.0.13", "127.0.0.14"])
        const after = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"].map(acceptedOn)
        // one connection to each hop, shared by both targets; one to each target
        assert.deepStrictEqual(after.map((n, i) => n - before[i]!), [1, 1, 1, 1])
      }),
    30_000
  )

  it.live(
    "nested ProxyJump in ssh_config: a hop's own ProxyJump comes first, as with ssh itself",
    () =>
      Effect.gen(function*() {
        const config = path.join(temp, "nested_config")
        writeFileSync(
          config,
          [
            "Host inner",
            "  HostName 127.0.0.13",
            "  ProxyJump j2",
            "Host j2",
            "  HostName 127.0.0.12",
            "  ProxyJump j1",
            "Host j1",
            "  HostName 127.0.0.11",
            "Host *",
            `  Port ${server.port}`,
            `  User ${server.user}`,
            `  IdentityFile ${server.keyPath}`,
            `  UserKnownHostsFile ${server.knownHostsPath}`,
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            ""
          ].join("\n")
        )
        // what OpenSSH does with this file
        const before = ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map(acceptedOn)
        const bySsh = execFileSync("ssh", ["-F", config, "inner", "echo $SSH_CONNECTION"], {
          encoding: "utf8"
        })
        const sshRoute = ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map((h, i) => acceptedOn(h) - before[i]!)
        assert.deepStrictEqual(sshRoute, [1, 1, 1])

        const mid = ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map(acceptedOn)
        const ours = yield* Effect.gen(function*() {
          const result = yield* remote("echo $SSH_CONNECTION", { host: "inner" })
          assert.strictEqual(ourConnectionsTo("127.0.0.11"), 1)
          assert.strictEqual(ourConnectionsTo("127.0.0.12"), 0)
          return result.stdout
        }).pipe(withSsh({ sshConfigFile: config }))
        const ourRoute = ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map((h, i) => acceptedOn(h) - mid[i]!)
        // the same host reached, by the same route
        assert.strictEqual(ours.split(" ")[2], bySsh.split(" ")[2])
        assert.strictEqual(ours.trim().split(" ")[2], "127.0.0.13")
        assert.deepStrictEqual(ourRoute, sshRoute)
      }),
    30_000
  )

  it.live("a nested ProxyJump that loops is a SettingsError, not a hang", () =>
    Effect.gen(function*() {
      const config = path.join(temp, "loop_config")
      writeFileSync(config, `Host a\n  ProxyJump b\nHost b\n  ProxyJump a\nHost *\n  Port ${server.port}\n`)
      const error = failureOf(
        yield* Effect.exit(remote("true", { host: "a" }).pipe(withSsh({ sshConfigFile: config })))
      )
      assert.instanceOf(error, SettingsError)
      assert.include(error.message, "ProxyJump")
    }))

  describe("a hop that fails is named, with its place in the chain", () => {
    it.live("authentication refused at the 2nd of 3 jump hosts", () =>
      Effect.gen(function*() {
        const error = connectionFailure(
          yield* Effect.exit(
            remote("true", { host: "127.0.0.14" }).pipe(
              withSsh({
                gateway: [hop("127.0.0.11"), hop("127.0.0.12", "nosuchuser"), hop("127.0.0.13")].join(",")
              })
            )
          )
        )
        assert.strictEqual(error.reason, "authentication")
        assert.strictEqual(error.host, "127.0.0.14")
        assert.include(error.message, "jump host 127.0.0.12 (2nd of 3): ")
        assert.strictEqual(error.hop, `${hop("127.0.0.11")} -> 127.0.0.12:${server.port}`)
      }), 30_000)

    for (const place of [1, 2, 3] as const) {
      it.live(
        `a jump host that accepts TCP and never answers (${place} of 3) fails within connectTimeout`,
        () =>
          Effect.gen(function*() {
            const hole = yield* Effect.acquireRelease(
              Effect.promise(() => Blackhole.start()),
              (hole) => Effect.promise(() => hole.close())
            )
            const hops = [hop("127.0.0.11"), hop("127.0.0.12"), hop("127.0.0.13")]
            hops[place - 1] = `${server.user}@127.0.0.1:${hole.port}`
            const started = Date.now()
            const error = connectionFailure(
              yield* Effect.exit(
                remote("true", { host: "127.0.0.14" }).pipe(
                  withSsh({ gateway: hops.join(","), connectTimeout: "2 seconds" })
                )
              )
            )
            const elapsed = Date.now() - started
            assert.strictEqual(error.reason, "timeout")
            assert.strictEqual(error.host, "127.0.0.14")
            assert.include(error.message, `jump host 127.0.0.1 (${["1st", "2nd", "3rd"][place - 1]} of 3): `)
            // each hop before it connected within its own connectTimeout; the silent one gave up in its
            assert.isBelow(elapsed, 2000 + 2500)
          }).pipe(Effect.scoped),
        30_000
      )
    }

    it.live(
      "the last link (the target behind the chain) is the target's own failure, with the link as its hop",
      () =>
        Effect.gen(function*() {
          const error = connectionFailure(
            yield* Effect.exit(
              remote("true", { host: "127.0.0.14:1" }).pipe(
                withSsh({ gateway: `${hop("127.0.0.11")},${hop("127.0.0.12")}` })
              )
            )
          )
          assert.strictEqual(error.reason, "refused")
          assert.strictEqual(error.hop, `${hop("127.0.0.12")} -> 127.0.0.14:1`)
          assert.notInclude(error.message, "jump host")
        }),
      30_000
    )
  })
})
