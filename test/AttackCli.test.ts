/**
 * Attacks on the `threadbare` command's promises (README "Command line"): hostile hosts, a
 * `{host}` that climbs out of its directory, files that are not files, counts that make no sense.
 * The command is built into a consumer project in /tmp as in Cli.test.ts and run against the
 * throwaway OpenSSH server, whose hosts are this machine.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { readServerFromEnv, remoteProcesses, type ServerDescription } from "../tests-remote/server.ts"
import { connectionFlags, exec, makeConsumer, root } from "./cliSupport.ts"

describe("threadbare command under attack", () => {
  let work = ""
  let project = ""
  let bin = ""
  let server: ServerDescription
  let h1 = ""
  let connection: ReadonlyArray<string> = []
  // A port that refuses every connection: an attempt to connect ends with exit 3, not 2.
  let refusing: ReadonlyArray<string> = []
  let drop = ""

  const cli = (...args: ReadonlyArray<string>) => exec(process.execPath, [bin, ...args], project)

  beforeAll(async () => {
    server = readServerFromEnv()
    h1 = server.hosts[0]!
    ;({ connection, refusing } = connectionFlags(server))
    work = fs.mkdtempSync(path.join(tmpdir(), "tbattack-"))
    // Markers go where the remote user (another account when the tests run as root) may write, so
    // that "the marker is absent" means the command did not run, not that it could not write.
    fs.chmodSync(work, 0o755)
    drop = path.join(work, "drop")
    fs.mkdirSync(drop)
    fs.chmodSync(drop, 0o777)
    ;({ bin, project } = await makeConsumer(work))
  })

  afterAll(() => {
    if (work !== "") fs.rmSync(work, { recursive: true, force: true })
  })

  it("refuses a malformed host before any host is touched, and in --dry-run too", async () => {
    const marker = path.join(drop, `touched-${randomBytes(4).toString("hex")}`)
    // The good host comes first: were hosts only checked as each one runs, it would have run.
    const ran = await cli("-H", `${h1},a b`, ...connection, "--", `touch ${marker}`)
    assert.strictEqual(ran.code, 2, ran.stderr)
    assert.isFalse(fs.existsSync(marker), "nothing ran on the good host")
    assert.include(ran.stderr, "a b")
    const dry = await cli("-H", `${h1},-oProxyCommand=id`, ...refusing, "--dry-run", "--", "true")
    assert.strictEqual(dry.code, 2, dry.stderr)
    assert.notInclude(dry.stdout, "would run")
  })

  it("get: a host named `..` does not take {host} out of its directory", async () => {
    const logs = path.join(work, "logs")
    fs.mkdirSync(logs, { recursive: true })
    // An ssh_config alias `..` is a valid host name for the library; as a path segment it climbs.
    const ran = await cli(
      "get",
      "/etc/hostname",
      path.join(logs, "{host}", "hostname"),
      "-H",
      `${h1},..`,
      ...refusing
    )
    assert.strictEqual(ran.code, 2, ran.stderr)
    assert.include(ran.stderr, "{host}")
    assert.notInclude(ran.stdout, "get:")
  })

  it("--rerun-failed refuses a report of another task", async () => {
    const report = path.join(work, "other-task.json")
    const marker = path.join(drop, `rerun-${randomBytes(4).toString("hex")}`)
    // A report of the task `flaky`, whose results have the same shape as an ad-hoc command's.
    fs.writeFileSync(
      report,
      JSON.stringify({
        task: "flaky",
        status: "completed",
        startedAt: 0,
        durationMillis: 1,
        hosts: [{ host: h1, batch: 1, status: "not-started", attempts: 0, durationMillis: 0, output: [] }],
        batches: []
      })
    )
    const ran = await cli(...connection, "--rerun-failed", report, "--", `touch ${marker}`)
    assert.strictEqual(ran.code, 2, ran.stderr)
    assert.include(ran.stderr, "flaky")
    assert.isFalse(fs.existsSync(marker), "nothing ran")
  })

  it("refuses --parallel 0 or negative with exit 2", async () => {
    for (const n of ["0", "-3"]) {
      const ran = await cli("-H", h1, ...refusing, "--parallel", n, "--", "true")
      assert.strictEqual(ran.code, 2, `--parallel ${n}: ${ran.stderr}`)
      assert.include(ran.stderr, "--parallel")
    }
    const workers = await cli(
      "run",
      "tasks.ts",
      "deploy",
      "--release",
      "1",
      "--channel",
      "beta",
      "--workers",
      "0",
      "-H",
      h1,
      ...refusing
    )
    assert.strictEqual(workers.code, 2, workers.stderr)
    assert.include(workers.stderr, "--workers")
  })

  it(
    "a FIFO or a directory as --hosts-file, --rerun-failed or a task module is a usage error, not a hang",
    async () => {
      const fifo = path.join(work, "fifo")
      fs.rmSync(fifo, { force: true })
      await exec("mkfifo", [fifo], work)
      const cases: ReadonlyArray<ReadonlyArray<string>> = [
        ["--hosts-file", fifo, ...refusing, "--", "true"],
        ["--hosts-file", work, ...refusing, "--", "true"],
        ["-H", h1, "--rerun-failed", fifo, ...refusing, "--", "true"],
        ["-H", h1, "--rerun-failed", work, ...refusing, "--", "true"],
        ["--ssh-config", fifo, "--ssh-config-hosts", "x", "--", "true"],
        ["run", fifo, "deploy", "-H", h1, ...refusing],
        // Files the library opens later, when it connects.
        ...["--known-hosts", "--key", "--ssh-config"].map((flag) => [
          "-H",
          h1,
          ...refusing.map((arg, i) => (refusing[i - 1] === flag ? fifo : arg)),
          "--",
          "true"
        ])
      ]
      for (const args of cases) {
        const ran = await exec(process.execPath, [bin, ...args], project, { millis: 15_000 })
        assert.strictEqual(ran.signal, null, `${args.join(" ")}: hung`)
        assert.strictEqual(ran.code, 2, `${args.join(" ")}: ${ran.stderr}`)
        assert.include(ran.stderr, "not a regular file", args.join(" "))
      }
    },
    120_000
  )

  it(
    "a --report that cannot be written is a usage error before any host is touched, the FIFO or link left alone",
    async () => {
      const fifo = path.join(work, "report-fifo")
      fs.rmSync(fifo, { force: true })
      await exec("mkfifo", [fifo], work)
      const touched = path.join(drop, "report-touched")
      const cases: ReadonlyArray<[string, string]> = [
        [fifo, "it is a FIFO"],
        ["/dev/stdout", "it is a symbolic link"],
        [work, "it is a directory"],
        [path.join(work, "no-such-dir", "r.json"), "does not exist"]
      ]
      for (const [report, why] of cases) {
        for (const dryRun of [[], ["--dry-run"]]) {
          const args = ["-H", h1, ...connection, "--report", report, ...dryRun, "--", `touch ${touched}`]
          const ran = await exec(process.execPath, [bin, ...args], project, { millis: 15_000 })
          assert.strictEqual(ran.code, 2, `${args.join(" ")}: ${ran.stderr}`)
          assert.include(ran.stderr, `--report: report ${report}: `, ran.stderr)
          assert.include(ran.stderr, why, ran.stderr)
          assert.isFalse(fs.existsSync(touched), `${report}: the command ran`)
        }
      }
      assert.isTrue(fs.lstatSync(fifo).isFIFO())
      assert.isTrue(fs.lstatSync("/dev/stdout").isSymbolicLink())
    },
    60_000
  )

  it("a hostile command or path keeps the dry run's lines and the summary's one line each, escapes written out", async () => {
    const hostile = "echo a\n\x1b[2J\x1b]0;pwned\x07\rb \u009b2J"
    const written = "echo a\\n\\x1b[2J\\x1b]0;pwned\\x07\\rb \\x9b2J"
    const dry = await cli("-H", h1, ...refusing, "--dry-run", "--", hostile)
    assert.strictEqual(dry.code, 0, dry.stderr)
    assert.deepStrictEqual(dry.stdout.split("\n").filter((l) => l !== ""), [`[${h1}] would run: ${written}`])
    const put = await cli("put", "/tmp/a\nb\x1b[2J", "/srv/\u009b2J", "-H", h1, ...refusing, "--dry-run")
    assert.strictEqual(put.code, 0, put.stderr)
    assert.deepStrictEqual(put.stdout.split("\n").filter((l) => l !== ""), [
      `[${h1}] would put /tmp/a\\nb\\x1b[2J -> /srv/\\x9b2J`
    ])
    // The command fails: the summary names it on a line of its own, no escape let through.
    const failed = await cli("-H", h1, ...connection, "--", "exit 3 # \x1b[2J\x1b]0;pwned\x07\rb \u009b2J")
    assert.strictEqual(failed.code, 1, failed.stderr)
    // eslint-disable-next-line no-control-regex
    assert.notMatch(failed.stdout + failed.stderr, /[\x1b\r\u0085\u009b]/)
    assert.include(
      failed.stderr,
      `  ${h1}: CommandFailed: [${h1}] command failed with exit code 3: exit 3 # \\x1b[2J\\x1b]0;pwned\\x07\\rb \\x9b2J\n`
    )
  })
})

describe("threadbare --json", () => {
  it("keeps standard output pure NDJSON in a dry run", async () => {
    const server = readServerFromEnv()
    const bin = path.join(root, "src", "bin", "threadbare.ts")
    const ran = await exec(process.execPath, [
      bin,
      "-H",
      server.hosts[0]!,
      "--port",
      "1",
      "--ssh-config",
      "none",
      "--json",
      "--dry-run",
      "--",
      "true"
    ], root)
    assert.strictEqual(ran.code, 0, ran.stderr)
    for (const line of ran.stdout.split("\n").filter((l) => l.length > 0)) {
      assert.doesNotThrow(() => JSON.parse(line), undefined, `not JSON on stdout: ${line}`)
    }
    assert.include(ran.stderr, "would run: true")
  })

  it("a dry run asks for no password: --prompt-sudo-password is not read", async () => {
    // No terminal here: were the prompt shown, it would end with exit 2 ("no password given").
    const server = readServerFromEnv()
    const bin = path.join(root, "src", "bin", "threadbare.ts")
    const flags = ["--port", "1", "--ssh-config", "none", "--sudo", "--prompt-sudo-password", "--dry-run"]
    const ran = await exec(process.execPath, [bin, "-H", server.hosts[0]!, ...flags, "--", "whoami"], root)
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout + ran.stderr, "whoami")
    assert.notInclude(ran.stdout + ran.stderr, "sudo password")
  })
})

describe("threadbare piped into a reader that goes away", () => {
  it("stops the remote command and exits 130 when standard output is closed (| head -1)", async () => {
    const server = readServerFromEnv()
    const marker = `tbattack_loop_${process.pid}_${randomBytes(3).toString("hex")}`
    const child = spawn(process.execPath, [
      path.join(root, "src", "bin", "threadbare.ts"),
      "-H",
      server.hosts[0]!,
      ...connectionFlags(server).connection,
      "--",
      `while true; do echo x; sleep 0.05; done # ${marker}`
    ], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve))
    // What `head -1` does: read a line, then close the pipe.
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()))
    child.stdout.destroy()
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    const code = await closed
    clearTimeout(timer)
    assert.strictEqual(code, 130, "the command ends by itself once nobody reads it")
    for (let waited = 0; waited < 10_000 && remoteProcesses(marker).length > 0; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.strictEqual(remoteProcesses(marker).length, 0, "the remote loop is stopped")
  }, 40_000)
})
