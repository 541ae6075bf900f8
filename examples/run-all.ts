/**
 * Runs every example against a throwaway OpenSSH server and checks it worked:
 * `npm run examples`. Starts the server, runs each example as a child process with
 * THREADBARE_SSHD_STATE set, checks its exit code and output, stops the server, and exits
 * non-zero when any example failed.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { startServer, STATE_ENV } from "../tests-remote/server.ts"

interface Example {
  readonly file: string
  /** Texts the output must contain. */
  readonly expect: ReadonlyArray<string>
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
  }
]

const dir = fileURLToPath(new URL(".", import.meta.url))
const server = await startServer({ hostCount: 4 })
process.once("exit", () => server.stopSync())
let failed = 0
for (const example of examples) {
  const child = spawnSync(process.execPath, [`${dir}${example.file}`], {
    env: { ...process.env, [STATE_ENV]: server.stateDir },
    encoding: "utf8",
    timeout: 120_000
  })
  const output = `${child.stdout}${child.stderr}`
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
