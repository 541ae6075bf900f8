import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { CommandResult } from "../src/CommandResult.ts"
import {
  CommandFailed,
  CommandTimeout,
  ConnectionError,
  type ConnectionErrorReason,
  PromptAborted,
  SettingsError,
  TransferError,
  type TransferErrorReason
} from "../src/Errors.ts"
import { readableCause, readableExit } from "../src/internal/execute/workerDefect.ts"
import { exitCodec } from "../src/internal/execute/workerProtocol.ts"

const result = (fields: Partial<ConstructorParameters<typeof CommandResult>[0]> = {}): CommandResult =>
  new CommandResult({
    host: "deploy@web-1",
    command: "systemctl restart app",
    realCommand: "/bin/bash -l -c 'systemctl restart app'",
    exitCode: 3,
    signal: null,
    stdout: "",
    stderr: "",
    durationMillis: 42,
    ...fields
  })

/** Encodes to JSON text and back, as across a worker process boundary. */
const roundTrip = <S extends Schema.Codec<any, any>>(schema: S, value: S["Type"]): S["Type"] => {
  const json = JSON.stringify(Schema.encodeUnknownSync(schema)(value))
  return Schema.decodeUnknownSync(schema)(JSON.parse(json))
}

const connectionReasons: ReadonlyArray<ConnectionErrorReason> = [
  "refused",
  "timeout",
  "authentication",
  "host-key",
  "unknown-host",
  "disconnected"
]

const transferReasons: ReadonlyArray<TransferErrorReason> = [
  "exists",
  "not-found",
  "permission",
  "is-directory",
  "not-a-directory",
  "not-a-file",
  "verify",
  "rsync",
  "failed"
]

describe("CommandResult", () => {
  it("succeeded and failed follow the exit code; a signal is a failure", () => {
    const ok = result({ exitCode: 0 })
    assert.isTrue(ok.succeeded)
    assert.isFalse(ok.failed)
    const bad = result({ exitCode: 1 })
    assert.isFalse(bad.succeeded)
    assert.isTrue(bad.failed)
    const killed = result({ exitCode: null, signal: "SIGKILL" })
    assert.isFalse(killed.succeeded)
    assert.isTrue(killed.failed)
  })

  it("ending says exit code or signal", () => {
    assert.strictEqual(result({ exitCode: 0 }).ending, "exit code 0")
    assert.strictEqual(result({ exitCode: 127 }).ending, "exit code 127")
    assert.strictEqual(result({ exitCode: null, signal: "SIGTERM" }).ending, "signal SIGTERM")
  })

  it("stdoutLines and stderrLines split lines without terminators or a trailing empty line", () => {
    assert.deepStrictEqual(result({ stdout: "" }).stdoutLines, [])
    assert.deepStrictEqual(result({ stdout: "a" }).stdoutLines, ["a"])
    assert.deepStrictEqual(result({ stdout: "a\n" }).stdoutLines, ["a"])
    assert.deepStrictEqual(result({ stdout: "a\r\nb\r\n" }).stdoutLines, ["a", "b"])
    assert.deepStrictEqual(result({ stdout: "a\n\nb\n\n" }).stdoutLines, ["a", "", "b", ""])
    assert.deepStrictEqual(result({ stdout: "\n" }).stdoutLines, [""])
    assert.deepStrictEqual(result({ stderr: "e1\ne2" }).stderrLines, ["e1", "e2"])
  })

  it("survives JSON across a process boundary with every field intact", () => {
    const original = result({
      stdout: "out 👍\r\nline\n",
      stderr: "err\n",
      exitCode: null,
      signal: "SIGKILL"
    })
    const back = roundTrip(CommandResult, original)
    assert.instanceOf(back, CommandResult)
    assert.deepStrictEqual({ ...back }, { ...original })
    assert.deepStrictEqual(back.stdoutLines, ["out 👍", "line"])
    assert.strictEqual(back.ending, "signal SIGKILL")
  })

  it("decoding refuses a malformed result", () => {
    assert.throws(() => Schema.decodeUnknownSync(CommandResult)({ host: "h", command: "c" }))
    assert.throws(() =>
      Schema.decodeUnknownSync(CommandResult)({
        ...Schema.encodeUnknownSync(CommandResult)(result()),
        exitCode: "3"
      })
    )
  })
})

describe("errors", () => {
  describe("CommandFailed", () => {
    it("message names host, command and ending, shows the output tail, and gives advice", () => {
      const e = new CommandFailed({ result: result({ stdout: "1\n2\n3\n4\n5\n6\n7\n", stderr: "" }) })
      assert.strictEqual(e.host, "deploy@web-1")
      assert.strictEqual(e.command, "systemctl restart app")
      assert.include(e.message, "[deploy@web-1]")
      assert.include(e.message, "systemctl restart app")
      assert.include(e.message, "exit code 3")
      assert.include(e.message, "3\n4\n5\n6\n7")
      assert.notInclude(e.message, "\n2\n")
      assert.include(e.message, "warnOnly")
    })

    it("prefers stderr for the tail, and says signal when killed", () => {
      const e = new CommandFailed({
        result: result({ stdout: "noise\n", stderr: "fatal: bad thing\n", exitCode: null, signal: "SIGKILL" })
      })
      assert.include(e.message, "fatal: bad thing")
      assert.notInclude(e.message, "noise")
      assert.include(e.message, "signal SIGKILL")
    })

    it("with no output there is no empty output section", () => {
      const e = new CommandFailed({ result: result() })
      assert.notInclude(e.message, "last output")
    })

    it("round-trips through JSON: _tag, nested result and message intact", () => {
      const original = new CommandFailed({ result: result({ stderr: "boom\n" }) })
      const encoded = Schema.encodeUnknownSync(CommandFailed)(original)
      assert.strictEqual((encoded as { _tag: string })._tag, "CommandFailed")
      const back = roundTrip(CommandFailed, original)
      assert.instanceOf(back, CommandFailed)
      assert.instanceOf(back, Error)
      assert.strictEqual(back._tag, "CommandFailed")
      assert.instanceOf(back.result, CommandResult)
      assert.deepStrictEqual({ ...back.result }, { ...original.result })
      assert.strictEqual(back.message, original.message)
    })
  })

  describe("CommandTimeout", () => {
    const e = new CommandTimeout({
      host: "web-2",
      command: "sleep 100",
      timeoutMillis: 5000,
      stdout: "partial",
      stderr: ""
    })

    it("message names host, command and the limit, and gives advice", () => {
      assert.include(e.message, "[web-2]")
      assert.include(e.message, "sleep 100")
      assert.include(e.message, "5000 ms")
      assert.include(e.message, "timeout")
      assert.match(e.message, /Raise/)
    })

    it("round-trips through JSON", () => {
      const back = roundTrip(CommandTimeout, e)
      assert.instanceOf(back, CommandTimeout)
      assert.strictEqual(back._tag, "CommandTimeout")
      assert.deepStrictEqual(
        [back.host, back.command, back.timeoutMillis, back.stdout, back.stderr],
        ["web-2", "sleep 100", 5000, "partial", ""]
      )
      assert.strictEqual(back.message, e.message)
    })
  })

  describe("ConnectionError", () => {
    it("every reason: message names host, user, port and reason, with advice of its own", () => {
      const advice = new Set<string>()
      for (const reason of connectionReasons) {
        const e = new ConnectionError({
          host: "10.0.0.7",
          port: 2222,
          user: "deploy",
          reason,
          detail: "ECONN-something"
        })
        assert.include(e.message, "[10.0.0.7]")
        assert.include(e.message, "deploy")
        assert.include(e.message, "2222")
        assert.include(e.message, reason)
        assert.include(e.message, "ECONN-something")
        const lines = e.message.split("\n")
        assert.isAtLeast(lines.length, 2, `${reason}: no advice line`)
        advice.add(lines.slice(1).join("\n"))
      }
      assert.strictEqual(advice.size, connectionReasons.length, "each reason has different advice")
    })

    it("round-trips through JSON for every reason", () => {
      for (const reason of connectionReasons) {
        const e = new ConnectionError({ host: "h", port: 22, user: "u", reason, detail: "d" })
        const back = roundTrip(ConnectionError, e)
        assert.instanceOf(back, ConnectionError)
        assert.strictEqual(back._tag, "ConnectionError")
        assert.deepStrictEqual([back.host, back.port, back.user, back.reason, back.detail], [
          "h",
          22,
          "u",
          reason,
          "d"
        ])
      }
    })

    it("decoding refuses an unknown reason", () => {
      assert.throws(() =>
        Schema.decodeUnknownSync(ConnectionError)({
          _tag: "ConnectionError",
          host: "h",
          port: 22,
          user: "u",
          reason: "gremlins",
          detail: "d"
        })
      )
    })
  })

  describe("TransferError", () => {
    it("message names host, side and path", () => {
      const e = new TransferError({
        host: "web-1",
        path: "/etc/app.conf",
        side: "remote",
        reason: "permission",
        detail: "EACCES"
      })
      assert.include(e.message, "[web-1]")
      assert.include(e.message, "/etc/app.conf")
      assert.include(e.message, "remote")
      assert.include(e.message, "permission")
      assert.include(e.message, "EACCES")
    })

    it("every reason: message gives advice beyond the detail", () => {
      for (const reason of transferReasons) {
        const e = new TransferError({ host: "h", path: "/p", side: "local", reason, detail: "" })
        const bare = `[h] transfer failed at local path /p (${reason}): `
        assert.isAbove(
          e.message.length,
          bare.length,
          `TransferError(${reason}) says nothing about what to do: ${JSON.stringify(e.message)}`
        )
      }
    })

    it("round-trips through JSON", () => {
      for (const reason of transferReasons) {
        const e = new TransferError({ host: "h", path: "/a b/c", side: "local", reason, detail: "x" })
        const back = roundTrip(TransferError, e)
        assert.instanceOf(back, TransferError)
        assert.strictEqual(back._tag, "TransferError")
        assert.deepStrictEqual([back.host, back.path, back.side, back.reason, back.detail], [
          "h",
          "/a b/c",
          "local",
          reason,
          "x"
        ])
      }
    })
  })

  describe("PromptAborted", () => {
    it("message quotes the prompt, says why, and gives advice", () => {
      const disabled = new PromptAborted({ prompt: "Continue?", reason: "disabled" })
      assert.include(disabled.message, "\"Continue?\"")
      assert.include(disabled.message, "abortOnPrompts")
      assert.include(disabled.message, "setting instead")
      const noTerminal = new PromptAborted({ prompt: "Password:", reason: "no-terminal" })
      assert.include(noTerminal.message, "\"Password:\"")
      assert.include(noTerminal.message, "no terminal")
      assert.include(noTerminal.message, "setting instead")
    })

    it("round-trips through JSON", () => {
      const back = roundTrip(PromptAborted, new PromptAborted({ prompt: "p?", reason: "no-terminal" }))
      assert.instanceOf(back, PromptAborted)
      assert.deepStrictEqual([back._tag, back.prompt, back.reason], ["PromptAborted", "p?", "no-terminal"])
    })
  })

  describe("SettingsError", () => {
    it("message names the setting and the value, quoted", () => {
      const e = new SettingsError({ setting: "port", value: "70000", detail: "a port is 1 to 65535" })
      assert.strictEqual(e.message, "invalid setting `port` = \"70000\": a port is 1 to 65535")
    })

    it("round-trips through JSON", () => {
      const back = roundTrip(
        SettingsError,
        new SettingsError({ setting: "env", value: "1A\n", detail: "bad name" })
      )
      assert.instanceOf(back, SettingsError)
      assert.deepStrictEqual([back._tag, back.setting, back.value, back.detail], [
        "SettingsError",
        "env",
        "1A\n",
        "bad name"
      ])
    })
  })

  describe("as Effect failures", () => {
    it.effect("errors are yieldable and catchable by tag", () =>
      Effect.gen(function*() {
        const caught = yield* Effect.gen(function*() {
          return yield* new ConnectionError({
            host: "h",
            port: 22,
            user: "u",
            reason: "refused",
            detail: "d"
          })
        }).pipe(
          Effect.catchTag("ConnectionError", (e) => Effect.succeed(`caught ${e.reason}`))
        )
        assert.strictEqual(caught, "caught refused")
      }))

    it("a decoded error is still an Error with a stack and the derived message", () => {
      const back = roundTrip(SettingsError, new SettingsError({ setting: "s", value: "v", detail: "d" }))
      assert.instanceOf(back, Error)
      assert.strictEqual(String(back), `SettingsError: ${back.message}`)
    })
  })
})

describe("defects, as a worker sends them and a report prints them", () => {
  const codec = exitCodec(Schema.Void, Schema.Never)

  /** What the parent prints for a defect a worker died with: encoded, through JSON, decoded. */
  const crossed = (defect: unknown): string => {
    const json = JSON.stringify(Schema.encodeSync(codec)(readableExit(Exit.die(defect))))
    const exit = Schema.decodeSync(codec)(JSON.parse(json))
    assert.isTrue(Exit.isFailure(exit))
    return Cause.pretty((exit as Exit.Failure<void, never>).cause)
  }

  /** What the final report of `Threadbare.runMain` prints for it. */
  const reported = (defect: unknown): string => Cause.pretty(readableCause(Cause.die(defect), true))

  const cyclic = () => {
    const node: Record<string, unknown> = { name: "node-with-a-cycle" }
    node["self"] = node
    return node
  }

  class Deployment {
    readonly host = "web-1"
    readonly steps: Array<unknown> = []
    constructor() {
      this.steps.push(this)
    }
  }

  const cases: ReadonlyArray<readonly [string, () => unknown, string]> = [
    ["an object", cyclic, "node-with-a-cycle"],
    ["a Map", () => {
      const map = new Map<string, unknown>([["name", "map-with-a-cycle"]])
      map.set("self", map)
      return map
    }, "map-with-a-cycle"],
    ["a Set", () => {
      const set = new Set<unknown>(["set-with-a-cycle"])
      set.add(set)
      return set
    }, "set-with-a-cycle"],
    ["a class instance", () => new Deployment(), "Deployment"],
    ["an Error's cause", () => {
      const error = new Error("failed with a cyclic cause")
      error.cause = { during: "deploy", error }
      return error
    }, "failed with a cyclic cause"]
  ]

  for (const [what, make, shows] of cases) {
    it(`a cycle in ${what} prints readably, marked, across a worker boundary and in the report`, () => {
      for (const text of [crossed(make()), reported(make())]) {
        assert.include(text, shows)
        assert.include(text, "Circular", text)
        assert.notInclude(text, "[object Object]")
      }
    })
  }

  it("an Error's own stack crosses, not the place where it was decoded", () => {
    const text = crossed(new Error("died in the worker"))
    assert.include(text, "died in the worker")
    assert.include(text, "Errors.test.ts")
    assert.notInclude(text, "decodeJsonError")
  })

  it("deep defects print without overflowing the stack: 100 000 nested objects, 100 000 causes", () => {
    let nested: Record<string, unknown> = { bottom: true }
    for (let i = 0; i < 100_000; i++) nested = { next: nested }
    let chain = new Error("cause 0")
    for (let i = 1; i < 100_000; i++) chain = new Error(`cause ${i}`, { cause: chain })
    for (const text of [crossed(nested), reported(nested)]) assert.include(text, "next")
    for (const text of [crossed(chain), reported(chain)]) {
      assert.include(text, "cause 99999")
      assert.include(text, "the rest cut")
    }
  })

  it("a getter of a defect is never run", () => {
    let ran = 0
    const defect = {
      name: "with-a-getter",
      get boom(): string {
        ran++
        throw new Error("a getter ran")
      }
    }
    for (const text of [crossed(defect), reported(defect)]) assert.include(text, "with-a-getter")
    assert.strictEqual(ran, 0)
  })

  it("a Redacted secret in a defect stays hidden, with or without a cycle", () => {
    const secret = "hunter2-in-a-defect"
    const plain = { password: Redacted.make(secret) }
    const withCycle: Record<string, unknown> = { password: Redacted.make(secret) }
    withCycle["self"] = withCycle
    for (const defect of [plain, withCycle]) {
      for (const text of [crossed(defect), reported(defect)]) {
        assert.notInclude(text, secret)
        assert.include(text, "redacted")
      }
    }
  })

  it("plain JSON defects cross as they are", () => {
    const defect = { code: 42, hosts: ["web-1", "web-2"], nested: { ok: false } }
    const json = JSON.stringify(Schema.encodeSync(codec)(readableExit(Exit.die(defect))))
    const exit = Schema.decodeSync(codec)(JSON.parse(json)) as Exit.Failure<void, never>
    assert.deepStrictEqual(Cause.squash(exit.cause), defect)
  })
})
