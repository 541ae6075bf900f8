/**
 * Runs every example against a throwaway OpenSSH server and checks it worked:
 * `npm run examples`. Starts the server, runs each example as a child process with
 * THREADBARE_SSHD_STATE set, checks its exit code and output, stops the server, and exits
 * non-zero when any example failed.
 */
import { spawn, spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { startServer, STATE_ENV } from "../tests-remote/server.ts"

interface Example {
  readonly file: string
  /** Texts the output must contain. */
  readonly expect: ReadonlyArray<string>
  /**
   * Runs with a stand-in OTLP collector (`otlp-receiver.ts`) at OTEL_EXPORTER_OTLP_ENDPOINT;
   * what it received (printed when it stops) counts as the example's output.
   */
  readonly collector?: boolean
}

const examples: ReadonlyArray<Example> = [
  {
    file: "local-settings.ts",
    expect: [
      "local: pwd",
      "ran in /tmp",
      "the command saw \"it's $HOME, `literally`\"",
      "test -e exited with 1"
    ]
  },
  { file: "remote-command.ts", expect: ["run: uname -s", "out: Linux", "the remote kernel is Linux"] },
  { file: "remote-sudo.ts", expect: ["sudo: whoami", "out: root"] },
  { file: "remote-rcd.ts", expect: ["out: /tmp/threadbare example's dir", "out: made-here"] },
  { file: "remote-streams.ts", expect: ["out: to stdout", "err: to stderr"] },
  { file: "remote-shell.ts", expect: ["42 is the answer", "out: release v1.2; rm -rf /"] },
  { file: "remote-failure.ts", expect: ["test exited with 1", "carried on after exit code 3"] },
  { file: "remote-hidden.ts", expect: ["hidden output was \"quietly\\n\""] },
  { file: "remote-many.ts", expect: ["40 commands succeeded"] },
  {
    file: "remote-file-exists.ts",
    expect: ["/etc/passwd exists: true", "/no/such/file exists: false", "appeared"]
  },
  { file: "execute-deploy.ts", expect: ["127.0.0.8    ok      release v42", "served 8 hosts"] },
  {
    file: "execute-failing-host.ts",
    expect: ["127.0.0.1    ok", "127.0.0.200  FAILED", "(refused)", "to retry later: 127.0.0.200"]
  },
  {
    file: "execute-crash.ts",
    expect: ["127.0.0.1    done on 127.0.0.1", "127.0.0.2    FAILED", "worker died (signal SIGKILL"]
  },
  { file: "transfer-sudo.ts", expect: ["read with sudo:", "without sudo:"] },
  { file: "transfer-memory.ts", expect: ["round trip identical: true", "refused: TransferError (exists)"] },
  { file: "transfer-directory.ts", expect: ["downloaded 202 entries", "bin/start mode 755"] },
  { file: "transfer-rsync.ts", expect: ["mirrored: app.js, assets", "partial transfer due to error"] },
  {
    file: "fleet-blue-green.ts",
    expect: [
      "load balancer: 127.0.0.1, 127.0.0.2, 127.0.0.3 drained and out of the pool",
      "report: completed",
      "all 6 hosts serve v2, are in the pool and healthy; at least 3 hosts served throughout"
    ]
  },
  {
    file: "fleet-canary.ts",
    expect: [
      "report: stopped (the after gate of batch 2 failed: LoadBalancerError: 127.0.0.3 is not healthy",
      "127.0.0.5   batch 3  not-started the after gate of batch 2 failed",
      "to finish: 127.0.0.2, 127.0.0.3, 127.0.0.4, 127.0.0.5, 127.0.0.6",
      "all 6 hosts serve v3, are in the pool and healthy, the canary deployed once"
    ]
  },
  { file: "execute-pool.ts", expect: ["started pool, 2nd call: 8 hosts", "fibers: 8 hosts", "0 failures"] },
  {
    file: "trace-collector.ts",
    collector: true,
    expect: [
      "deploy completed: 4 hosts",
      "received",
      "spans in 1 trace(s)",
      "  Execute.rolling\n    batch 1\n      host 127.0.0.1\n",
      "Operations.remote: uname -r"
    ]
  },
  {
    file: "testing-layer.ts",
    expect: [
      "web-2.invalid: git clone",
      "deployed abc123: 11 steps recorded, web-2 cloned and started, web-1 reloaded"
    ]
  }
]

const dir = fileURLToPath(new URL(".", import.meta.url))
const server = await startServer({ hostCount: 8 })
process.once("exit", () => server.stopSync())
let failed = 0
/** Starts `otlp-receiver.ts` on a free port; `stop` ends it and gives what it printed. */
const startCollector = () =>
  new Promise<{ readonly endpoint: string; readonly stop: () => Promise<string> }>((resolve, reject) => {
    const child = spawn(process.execPath, [`${dir}otlp-receiver.ts`, "0"], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let printed = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (text: string) => {
      printed += text
      const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(printed)?.[1]
      if (port !== undefined) {
        resolve({
          endpoint: `http://127.0.0.1:${port}`,
          stop: () =>
            new Promise((done) => {
              child.once("exit", () => done(printed))
              child.kill("SIGTERM")
            })
        })
      }
    })
    child.once("exit", (code) => reject(new Error(`the OTLP receiver exited (${code}): ${printed}`)))
  })

for (const example of examples) {
  const collector = example.collector === true ? await startCollector() : undefined
  const child = spawnSync(process.execPath, [`${dir}${example.file}`], {
    env: {
      ...process.env,
      [STATE_ENV]: server.stateDir,
      ...(collector === undefined ? {} : { OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint })
    },
    encoding: "utf8",
    timeout: 120_000
  })
  const received = collector === undefined ? "" : await collector.stop()
  const output = `${child.stdout}${child.stderr}${received}`
  const missing = example.expect.filter((text) => !output.includes(text))
  if (child.status === 0 && missing.length === 0) {
    console.log(`ok   ${example.file}`)
  } else {
    failed++
    console.log(
      `FAIL ${example.file} (exit ${child.status ?? child.signal})${
        missing.length > 0 ? `, missing ${JSON.stringify(missing)}` : ""
      }`
    )
    console.log(output.replace(/^/gm, "     "))
  }
}
await server.stop()
console.log(
  failed === 0 ? `all ${examples.length} examples passed` : `${failed} of ${examples.length} examples failed`
)
process.exitCode = failed === 0 ? 0 : 1
