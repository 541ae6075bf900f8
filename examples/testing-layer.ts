/**
 * Unit-testing a deploy program with `Testing.layer`: no server, no local process. The deploy
 * below runs against hosts that do not exist; the script answers its commands and files, and
 * the test checks what it would have run, in milliseconds.
 */
import { NodeServices } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { Operations, Settings, Testing } from "../src/index.ts"

/** The deploy under test: build here, then on each host check out the release and restart if needed. */
const deploy = (hosts: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const head = yield* Operations.local("git rev-parse --short HEAD", { capture: true })
    const release = head.stdoutLines[0]!
    yield* Operations.local(["make", "dist"], { capture: true, useShell: false })
    yield* Effect.forEach(hosts, (host) =>
      Effect.gen(function*() {
        if (!(yield* Operations.remoteFileExists("/srv/app/.git"))) {
          yield* Operations.remote("git clone https://git.example/app.git /srv/app")
        }
        yield* Operations.remote(`git checkout ${release}`).pipe(Settings.rcd("/srv/app"))
        const active = yield* Operations.remoteSudo("systemctl is-active app", { warnOnly: true })
        yield* Operations.remoteSudo(active.succeeded ? "systemctl reload app" : "systemctl start app")
      }).pipe(Settings.settings({ host: `deploy@${host}` })), { discard: true })
    return release
  })

const test = Effect.gen(function*() {
  const release = yield* deploy(["web-1.invalid", "web-2.invalid"])
  const ran = yield* Testing.recorded
  for (const entry of ran) {
    const where = entry._tag === "Command" ? `${entry.host}${entry.sudo ? " (sudo)" : ""}` : entry.host
    const what = entry._tag === "Command"
      ? entry.command
      : `${entry._tag} ${"path" in entry ? entry.path : ""}`
    yield* Effect.log(`${where}: ${what}`)
  }
  const restarts = ran.filter((e) => e._tag === "Command" && /systemctl (start|reload)/.test(e.command))
  if (release !== "abc123" || restarts.length !== 2) {
    return yield* Effect.die("the deploy did not do what it should")
  }
  yield* Effect.log(
    `deployed ${release}: ${ran.length} steps recorded, web-2 cloned and started, web-1 reloaded`
  )
}).pipe(
  Settings.hide,
  Effect.provide(Layer.mergeAll(
    Testing.layer({
      commands: [
        { command: "git rev-parse --short HEAD", where: "local", stdout: "abc123\n" },
        { command: "make dist", where: "local" },
        { command: /^git (clone|checkout) / },
        // web-1 runs the app already; web-2 is new.
        { command: "systemctl is-active app", host: "web-1.invalid", stdout: "active\n" },
        { command: "systemctl is-active app", host: "web-2.invalid", exitCode: 3, stdout: "inactive\n" },
        { command: /^systemctl (start|reload) app$/ }
      ],
      files: { "web-1.invalid:/srv/app/.git": "" }
    }),
    NodeServices.layer
  ))
)

const started = performance.now()
await Effect.runPromise(test)
console.log(`test took ${(performance.now() - started).toFixed(1)} ms`)
