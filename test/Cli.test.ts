/**
 * The `threadbare` command, run as a user runs it: the package is built with `tsconfig.build.json`
 * into the `node_modules` of a consumer project in /tmp (beside a `tasks.ts` that imports
 * `effect-threadbare`), and `node …/dist/bin/threadbare.js` is spawned there against the
 * throwaway OpenSSH server, whose hosts are this machine: what a command did on a host is checked
 * on the local disk. One test packs the package with `npm pack`, installs the tarball from the
 * registry's dependencies into an empty project and runs its `node_modules/.bin/threadbare`.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Schema from "effect/Schema"
import { spawn } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { Event } from "../src/Events.ts"
import { readServerFromEnv, remoteProcesses, type ServerDescription } from "../tests-remote/server.ts"
import { buildPackage, connectionFlags, exec, makeConsumer, root, sha256 } from "./cliSupport.ts"

const waitFor = async (check: () => boolean, millis: number): Promise<boolean> => {
  for (let waited = 0; waited < millis; waited += 100) {
    if (check()) return true
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return check()
}

describe("threadbare command", () => {
  let work = ""
  let project = ""
  let bin = ""
  let server: ServerDescription
  let h1 = ""
  let h2 = ""
  let settings: ReadonlyArray<string> = []
  let connection: ReadonlyArray<string> = []
  // The same settings with a port that refuses every connection.
  let refusing: ReadonlyArray<string> = []

  const cli = (...args: ReadonlyArray<string>) => exec(process.execPath, [bin, ...args], project)

  beforeAll(async () => {
    server = readServerFromEnv()
    ;[h1 = "", h2 = ""] = server.hosts
    ;({ connection, refusing } = connectionFlags(server))
    // Without `--ssh-config none`, for the test that reads hosts from an ssh config.
    settings = connection.slice(0, -2)
    work = fs.mkdtempSync(path.join(tmpdir(), "tbcli-"))
    ;({ bin, project } = await makeConsumer(work))
    assert.isTrue(
      fs.readFileSync(bin, "utf8").startsWith("#!/usr/bin/env node\n"),
      "the bin starts with its shebang"
    )
  })

  afterAll(() => {
    if (work !== "") fs.rmSync(work, { recursive: true, force: true })
  })

  it("prints its help, with the exit codes, and a task's flags from its input Schema", async () => {
    const help = await cli("--help")
    assert.strictEqual(help.code, 0, help.stderr)
    for (
      const text of [
        "USAGE",
        "--hosts, -H",
        "--parallel",
        "--sudo-password-env",
        "Exit status",
        "3  a host could not be reached",
        "put",
        "get",
        "run"
      ]
    ) {
      assert.include(help.stdout, text)
    }
    const task = await cli("run", "tasks.ts", "deploy", "--help")
    assert.strictEqual(task.code, 0, task.stderr)
    assert.match(task.stdout, /--release number\s+the release number/)
    assert.match(task.stdout, /--channel choice .*stable, beta/)
    assert.match(task.stdout, /--note string .*optional/)
    const completions = await cli("--completions", "bash")
    assert.strictEqual(completions.code, 0)
    assert.include(completions.stdout, "threadbare")
    assert.include(completions.stdout, "--hosts")
  })

  it("runs an ad-hoc command on two hosts, each line prefixed with its host", async () => {
    const ran = await cli("-H", `${h1},${h2}`, ...connection, "--", "echo", "answer=$((6*7))")
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout, `[${h1}] out: answer=42`)
    assert.include(ran.stdout, `[${h2}] out: answer=42`)
    // Serial by default, like Fabric: the first host is done before the second starts.
    assert.isBelow(ran.stdout.indexOf(`[${h1}] out:`), ran.stdout.indexOf(`[${h2}] run:`))
    assert.include(ran.stderr, "2 host(s), 2 ok, 0 failed")
  })

  it("takes hosts from a file and from the ssh config, and runs them in parallel", async () => {
    const hostsFile = path.join(work, "hosts.txt")
    fs.writeFileSync(hostsFile, `# the first host\n${h1}\n\n`)
    const ran = await cli(
      ...settings,
      "--hosts-file",
      hostsFile,
      "--ssh-config",
      server.sshConfigPath,
      "--ssh-config-hosts",
      "tb2",
      "--parallel",
      "2",
      "--",
      "echo from-$USER"
    )
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout, `[${h1}] out: from-${server.user}`)
    assert.include(ran.stdout, `[tb2] out: from-${server.user}`)
  })

  it("exits 1 when a command fails, naming the host; 3 when a host cannot be reached", async () => {
    const failing = await cli(
      "-H",
      `${h1},${h2}`,
      ...connection,
      "--",
      `case "$SSH_CONNECTION" in *" ${h2} "*) exit 9;; esac; echo fine`
    )
    assert.strictEqual(failing.code, 1, failing.stderr)
    assert.include(failing.stdout, `[${h1}] out: fine`)
    assert.match(failing.stderr, new RegExp(`  ${h2.replaceAll(".", "\\.")}: CommandFailed: .*exit code 9`))
    assert.include(failing.stderr, "1 ok, 1 failed")

    const unreachable = await cli("-H", h1, ...refusing, "--", "true")
    assert.strictEqual(unreachable.code, 3, unreachable.stderr)
    assert.include(unreachable.stderr, `${h1}: ConnectionError`)
  })

  it("puts and gets a file with --sudo; without sudo the get is refused (exit 4)", async () => {
    if (!server.isRoot) return
    const local = path.join(work, "payload.bin")
    fs.writeFileSync(local, randomBytes(200_000))
    const remote = `/root/tbcli-${process.pid}-${randomBytes(4).toString("hex")}.bin`
    try {
      const put = await cli("put", local, remote, "-H", `${h1},${h2}`, ...connection, "--sudo")
      assert.strictEqual(put.code, 0, put.stderr)
      assert.include(put.stdout, `[${h2}] sudo put:`)
      // The hosts are this machine: the file is where root put it.
      assert.strictEqual(sha256(remote), sha256(local))
      assert.strictEqual(fs.statSync(remote).uid, 0)

      const target = path.join(work, "got-{host}.bin")
      const get = await cli("get", remote, target, "-H", `${h1},${h2}`, ...connection, "--sudo")
      assert.strictEqual(get.code, 0, get.stderr)
      for (const host of [h1, h2]) {
        assert.strictEqual(sha256(path.join(work, `got-${host}.bin`)), sha256(local))
      }

      const shared = await cli("get", remote, path.join(work, "one.bin"), "-H", `${h1},${h2}`, ...connection)
      assert.strictEqual(shared.code, 2, shared.stderr)
      assert.include(shared.stderr, "{host}")

      const refused = await cli("get", remote, path.join(work, "refused.bin"), "-H", h1, ...connection)
      assert.strictEqual(refused.code, 4, refused.stderr)
      assert.include(refused.stderr, "TransferError")
    } finally {
      fs.rmSync(remote, { force: true })
    }
  })

  it("answers sudo's password from the environment, never from a flag, and never prints it", async () => {
    if (server.passwordUser === undefined || server.passwordUserPassword === undefined) return
    const asPasswordUser = connection.map((arg) => (arg === server.user ? server.passwordUser! : arg))
    const secret = server.passwordUserPassword
    const ran = await exec(
      process.execPath,
      [bin, "-H", h1, ...asPasswordUser, "--sudo", "--sudo-password-env", "TB_CLI_SUDO", "--", "whoami"],
      project,
      { env: { TB_CLI_SUDO: secret } }
    )
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout, `[${h1}] out: root`)
    assert.notInclude(ran.stdout + ran.stderr, secret)

    const unset = await cli(
      "-H",
      h1,
      ...asPasswordUser,
      "--sudo",
      "--sudo-password-env",
      "TB_CLI_UNSET",
      "--",
      "whoami"
    )
    assert.strictEqual(unset.code, 2, unset.stderr)
    assert.include(unset.stderr, "TB_CLI_UNSET is not set")
    const plain = await cli("-H", h1, ...asPasswordUser, "--sudo-password", secret, "--", "whoami")
    assert.strictEqual(plain.code, 2, "no flag takes a password itself")
  })

  it("runs a task with typed flags in worker processes", async () => {
    const ran = await cli(
      "run",
      "tasks.ts",
      "deploy",
      "--release",
      "42",
      "--channel",
      "beta",
      "--verbose",
      "-H",
      `${h1},${h2}`,
      ...connection
    )
    assert.strictEqual(ran.code, 0, ran.stderr)
    for (const host of [h1, h2]) {
      assert.include(ran.stdout, `[${host}] out: release=42 channel=beta note=- verbose=true`)
    }
    assert.include(ran.stderr, "deploy: 2 host(s), 2 ok")
    const json = await cli(
      "run",
      "tasks.ts",
      "echo-all",
      "--input",
      `["a","b"]`,
      "--mode",
      "fibers",
      "-H",
      h1,
      ...connection
    )
    assert.strictEqual(json.code, 0, json.stderr)
    assert.include(json.stdout, `[${h1}] out: a+b`)
  })

  it("takes a Redacted field from an environment variable, never from the command line", async () => {
    const secret = `tok-${randomBytes(6).toString("hex")}`
    const digest = createHash("sha256").update(secret).digest("hex").slice(0, 16)
    const help = await cli("run", "tasks.ts", "with-secret", "--help")
    assert.match(
      help.stdout,
      /--token-env name\s+\(task input token: secret, read from this environment variable\)/,
      help.stdout
    )
    assert.notMatch(help.stdout, /--token /)
    const ran = await exec(
      process.execPath,
      [
        bin,
        "run",
        "tasks.ts",
        "with-secret",
        "--token-env",
        "TB_CLI_TOKEN",
        "--account",
        "ann",
        "-H",
        h1,
        ...connection
      ],
      project,
      { env: { TB_CLI_TOKEN: secret } }
    )
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout, `[${h1}] out: account=ann token-sha256=${digest}`)
    assert.notInclude(ran.stdout + ran.stderr, secret)
    // The value itself is no flag, and a variable that is not set is named.
    const given = await cli(
      "run",
      "tasks.ts",
      "with-secret",
      "--token",
      secret,
      "--account",
      "ann",
      "-H",
      h1,
      ...refusing
    )
    assert.strictEqual(given.code, 2, given.stderr)
    const unset = await cli(
      "run",
      "tasks.ts",
      "with-secret",
      "--token-env",
      "TB_CLI_UNSET",
      "--account",
      "ann",
      "-H",
      h1,
      ...refusing
    )
    assert.strictEqual(unset.code, 2, unset.stderr)
    assert.include(unset.stderr, "--token-env: the environment variable TB_CLI_UNSET is not set")
    const missing = await cli("run", "tasks.ts", "with-secret", "--account", "ann", "-H", h1, ...refusing)
    assert.strictEqual(missing.code, 2, missing.stderr)
    assert.include(missing.stderr, "--token-env")
  })

  it("takes every kind of secret field from the environment: RedactedFromValue, a Redacted number, an optional one", async () => {
    const key = `key-${randomBytes(6).toString("hex")}`
    const digest = createHash("sha256").update(key).digest("hex").slice(0, 16)
    const help = await cli("run", "tasks.ts", "with-secrets", "--help")
    for (const flag of ["--api-key-env", "--pin-env", "--note-env"]) {
      assert.include(help.stdout, flag, help.stdout)
    }
    assert.notMatch(help.stdout, /--api-key |--pin |--note /, help.stdout)
    const args = ["run", "tasks.ts", "with-secrets", "--api-key-env", "TB_KEY", "--pin-env", "TB_PIN"]
    const ran = await exec(process.execPath, [bin, ...args, "-H", h1, ...connection], project, {
      env: { TB_KEY: key, TB_PIN: "4041" }
    })
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout, `[${h1}] out: key-sha256=${digest} pin+1=4042 note-length=none`)
    assert.notInclude(ran.stdout + ran.stderr, key)
    // A PIN that is no integer is refused, naming the flag, and the message does not repeat it.
    const bad = await exec(process.execPath, [bin, ...args, "-H", h1, ...refusing], project, {
      env: { TB_KEY: key, TB_PIN: "40.5x-secretpin" }
    })
    assert.strictEqual(bad.code, 2, bad.stderr)
    assert.include(bad.stderr, "--pin-env")
    assert.notInclude(bad.stdout + bad.stderr, "secretpin")
    // The value itself is no flag.
    const given = await cli(
      "run",
      "tasks.ts",
      "with-secrets",
      "--api-key",
      key,
      "--pin-env",
      "TB_PIN",
      "-H",
      h1,
      ...refusing
    )
    assert.strictEqual(given.code, 2, given.stderr)
  })

  it("refuses a bad flag value with exit 2, naming the flag, before any host is touched", async () => {
    // Port 1 refuses every connection: an attempt would end with exit 3, not 2.
    const hosts = ["-H", h1, ...refusing]
    const notANumber = await cli(
      "run",
      "tasks.ts",
      "deploy",
      "--release",
      "abc",
      "--channel",
      "beta",
      ...hosts
    )
    assert.strictEqual(notANumber.code, 2, notANumber.stderr)
    assert.include(notANumber.stdout + notANumber.stderr, "--release")
    const notAnInt = await cli("run", "tasks.ts", "deploy", "--release", "4.5", "--channel", "beta", ...hosts)
    assert.strictEqual(notAnInt.code, 2, notAnInt.stderr)
    assert.match(notAnInt.stderr, /--release: Expected an integer/)
    const badChoice = await cli(
      "run",
      "tasks.ts",
      "deploy",
      "--release",
      "4",
      "--channel",
      "nightly",
      ...hosts
    )
    assert.strictEqual(badChoice.code, 2, badChoice.stderr)
    assert.include(badChoice.stdout + badChoice.stderr, "--channel")
    const missing = await cli("run", "tasks.ts", "deploy", "--release", "4", ...hosts)
    assert.strictEqual(missing.code, 2, missing.stderr)
    assert.include(missing.stderr, "--channel")
    const notJson = await cli("run", "tasks.ts", "echo-all", "--input", "[1,", ...hosts)
    assert.strictEqual(notJson.code, 2, notJson.stderr)
    assert.include(notJson.stderr, "--input: not JSON")
    for (const ran of [notANumber, notAnInt, badChoice, missing, notJson]) {
      assert.notInclude(ran.stderr, "ConnectionError")
    }
    const clash = await cli("run", "tasks.ts", "clash", ...hosts)
    assert.strictEqual(clash.code, 2, clash.stderr)
    assert.include(clash.stderr, `field "hosts" would be the flag --hosts`)
    const twins = await cli("run", "tasks.ts", "twins", ...hosts)
    assert.strictEqual(twins.code, 2, twins.stderr)
    assert.include(
      twins.stderr,
      `fields "token" and "tokenEnv" would both be the flag --token-env; rename one`
    )
    // Its help says why it lists none of the task's flags.
    const help = await cli("run", "tasks.ts", "twins", "--help")
    assert.include(help.stderr, `would both be the flag --token-env; rename one`)
    assert.include(help.stdout, "USAGE")
  })

  it("stops the remote commands on Ctrl-C and exits 130", async () => {
    const marker = `tbcli_sleep_${process.pid}_${randomBytes(3).toString("hex")}`
    const child = spawn(process.execPath, [
      bin,
      "-H",
      `${h1},${h2}`,
      "-P",
      "2",
      ...connection,
      "--",
      `sleep 30 # ${marker}`
    ], {
      cwd: project,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve))
    assert.isTrue(
      await waitFor(() => remoteProcesses(marker).length >= 2, 20_000),
      `both sleeps started: ${stdout}`
    )
    child.kill("SIGINT")
    assert.strictEqual(await closed, 130)
    assert.isTrue(
      await waitFor(() => remoteProcesses(marker).length === 0, 10_000),
      "the remote commands are gone"
    )
  })

  it("prints newline-delimited events with --json", async () => {
    const ran = await cli(
      "-H",
      `${h1},${h2}`,
      ...connection,
      "--json",
      "--parallel",
      "2",
      "--",
      "echo json-line"
    )
    assert.strictEqual(ran.code, 0, ran.stderr)
    const events = ran.stdout.trim().split("\n").map((line) =>
      Schema.decodeUnknownSync(Event)(JSON.parse(line))
    )
    const finished = events.flatMap((e) => (e._tag === "HostFinished" ? [`${e.host}:${e.status}`] : []))
    assert.sameMembers(finished, [`${h1}:succeeded`, `${h2}:succeeded`])
    assert.isTrue(events.some((e) => e._tag === "OutputLine" && e.line === "json-line"))
    assert.strictEqual(events.at(-1)?._tag, "RunFinished")
  })

  it("touches nothing with --dry-run", async () => {
    const marker = path.join(work, `dry-${randomBytes(4).toString("hex")}`)
    const ran = await cli("-H", `${h1},${h2}`, ...connection, "--dry-run", "--", `touch ${marker}`)
    assert.strictEqual(ran.code, 0, ran.stderr)
    assert.include(ran.stdout, `[${h2}] would run: touch ${marker}`)
    const put = await cli(
      "put",
      path.join(root, "package.json"),
      marker,
      "-H",
      h1,
      ...connection,
      "--dry-run"
    )
    assert.strictEqual(put.code, 0, put.stderr)
    assert.isFalse(fs.existsSync(marker))
  })

  it("rolls out in batches, stops at a failure, and reruns what a report says is left", async () => {
    const report = path.join(work, "report.json")
    const h3 = server.hosts[2]!
    const hosts = `${h1},${h2},${h3}`
    const flaky = ["run", "tasks.ts", "flaky", ...connection]
    const first = await cli(
      ...flaky,
      "--fail-on",
      h2,
      "--marker",
      "first",
      "-H",
      hosts,
      "--batches",
      "1",
      "--report",
      report
    )
    assert.strictEqual(first.code, 1, first.stderr)
    assert.notInclude(first.stdout, `[${h3}]`, "the failure in batch 2 stops the rollout before batch 3")
    const written = JSON.parse(fs.readFileSync(report, "utf8")) as {
      hosts: Array<{ host: string; status: string }>
    }
    assert.deepStrictEqual(written.hosts.map((h) => `${h.host}:${h.status}`), [
      `${h1}:succeeded`,
      `${h2}:failed`,
      `${h3}:not-started`
    ])

    const rerun = await cli(
      ...flaky,
      "--fail-on",
      "none",
      "--marker",
      "second",
      "--serial",
      "--rerun-failed",
      report
    )
    assert.strictEqual(rerun.code, 0, rerun.stderr)
    assert.include(rerun.stdout, `[${h2}] out: second`)
    assert.include(rerun.stdout, `[${h3}] out: second`)
    assert.notInclude(rerun.stdout, `[${h1}]`)
  })

  it(
    "installs from its packed tarball into an empty project: help, ad-hoc, put and get, a typed task, --json",
    {
      timeout: 120_000
    },
    async () => {
      // The tarball is packed from a copy of what `files` publishes, with dist built into it, so
      // the checkout's own dist/ is left alone.
      const stage = path.join(work, "stage")
      fs.mkdirSync(stage)
      fs.copyFileSync(path.join(root, "package.json"), path.join(stage, "package.json"))
      fs.copyFileSync(path.join(root, "README.md"), path.join(stage, "README.md"))
      fs.cpSync(path.join(root, "src"), path.join(stage, "src"), { recursive: true })
      await buildPackage(path.join(stage, "dist"))
      const packed = await exec(
        "npm",
        ["pack", "--ignore-scripts", "--silent", "--pack-destination", work],
        stage
      )
      assert.strictEqual(packed.code, 0, packed.stderr)
      const tarball = path.join(work, packed.stdout.trim().split("\n").at(-1)!)

      const empty = path.join(work, "empty")
      fs.mkdirSync(empty)
      fs.writeFileSync(
        path.join(empty, "package.json"),
        JSON.stringify({ name: "empty", private: true, type: "module" })
      )
      const installed = await exec("npm", ["install", "--no-audit", "--no-fund", tarball], empty)
      assert.strictEqual(installed.code, 0, installed.stderr)

      const threadbare = path.join(empty, "node_modules", ".bin", "threadbare")
      const help = await exec(threadbare, ["--help"], empty)
      assert.strictEqual(help.code, 0, help.stderr)
      assert.include(help.stdout, "USAGE")
      const ran = await exec(threadbare, ["-H", `${h1},${h2}`, ...connection, "--", "echo installed"], empty)
      assert.strictEqual(ran.code, 0, ran.stderr)
      assert.include(ran.stdout, `[${h1}] out: installed`)
      assert.include(ran.stdout, `[${h2}] out: installed`)

      // A put and a get through sudo (the hosts are this machine: root writes beside the test).
      const local = path.join(empty, "payload.bin")
      fs.writeFileSync(local, randomBytes(300_000))
      const remote = path.join(work, "packed-put.bin")
      const put = await exec(
        threadbare,
        ["put", local, remote, "-H", `${h1},${h2}`, ...connection, "--sudo"],
        empty
      )
      assert.strictEqual(put.code, 0, put.stderr)
      assert.strictEqual(sha256(remote), sha256(local))
      const got = await exec(
        threadbare,
        ["get", remote, path.join(empty, "got-{host}.bin"), "-H", `${h1},${h2}`, ...connection, "--sudo"],
        empty
      )
      assert.strictEqual(got.code, 0, got.stderr)
      for (const host of [h1, h2]) {
        assert.strictEqual(sha256(path.join(empty, `got-${host}.bin`)), sha256(local))
      }

      // A task of the project's own, with flags from its input Schema, its events as JSON lines.
      fs.copyFileSync(path.join(root, "test", "fixtures", "cli-tasks.ts"), path.join(empty, "tasks.ts"))
      const task = await exec(threadbare, [
        "run",
        "tasks.ts",
        "deploy",
        "--release",
        "42",
        "--channel",
        "beta",
        "-H",
        `${h1},${h2}`,
        ...connection,
        "--mode",
        "fibers",
        "--json"
      ], empty)
      assert.strictEqual(task.code, 0, task.stderr)
      const events = task.stdout.trim().split("\n").map((line) =>
        Schema.decodeUnknownSync(Event)(JSON.parse(line))
      )
      const lines = events.flatMap((e) => (e._tag === "OutputLine" ? [`${e.host}:${e.line}`] : []))
      for (const host of [h1, h2]) {
        assert.include(lines, `${host}:release=42 channel=beta note=- verbose=false`)
      }
      const badFlag = await exec(threadbare, [
        "run",
        "tasks.ts",
        "deploy",
        "--release",
        "x",
        "--channel",
        "beta",
        "-H",
        h1
      ], empty)
      assert.strictEqual(badFlag.code, 2, badFlag.stderr)
    }
  )
})
