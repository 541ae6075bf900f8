/**
 * Quoting and command building, checked against real shells: every string a caller can give
 * (a word, a directory, a variable's value, an argument) must reach the command byte for byte,
 * and nothing the caller did not write may run.
 *
 * Thousands of cases run in few processes: each batch is one script (or one argument-vector
 * runner) that prints every case's output followed by a NUL, and each case is then checked on
 * its own.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import {
  build,
  type BuiltCommand,
  type CommandSpec,
  join,
  quote,
  quoteDir,
  splitShell
} from "../src/internal/command/shell.ts"

// -- fixtures ------------------------------------------------------------------------------------

const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "threadbare-shell-")))
/** An empty home, so that `bash -l` reads no slow or noisy profile and `~` is ours. */
const home = path.join(root, "home")
/** Where the working-directory cases create their directories. */
const dirs = path.join(root, "dirs")
/** Injected commands would create this file. It must never exist. */
const marker = path.join(os.tmpdir(), `threadbare-pwned-${process.pid}-${Date.now()}`)

beforeAll(() => {
  fs.mkdirSync(home, { recursive: true })
  fs.mkdirSync(dirs, { recursive: true })
})

afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true })
  fs.rmSync(marker, { force: true })
})

const shellEnv: NodeJS.ProcessEnv = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: home, LANG: "C.UTF-8" }

const shells = ["/bin/sh -c", "/bin/bash -l -c"] as const
/**
 * For the thousands of generated cases: a login shell parses the same way but forks in its
 * profile, so the generated cases use plain `bash -c` and the hand-picked ones all three.
 */
const fastShells = ["/bin/sh -c", "/bin/bash -c"] as const
const allShells = [...shells, "/bin/bash -c"] as const

// -- generators ----------------------------------------------------------------------------------

/** Pieces that shells treat specially, unicode that is easy to mangle, and injection attempts. */
const tokens = [
  "'",
  "\"",
  "$",
  "$(",
  ")",
  "`",
  "\\",
  "\\\\",
  "\\'",
  "\\\"",
  "\n",
  "\r\n",
  "\t",
  " ",
  "  ",
  ";",
  "&&",
  "||",
  "|",
  "&",
  ">",
  "<",
  "*",
  "?",
  "[",
  "]",
  "{",
  "}",
  "{a,b}",
  "!",
  "!!",
  "#",
  "~",
  "=",
  "%",
  "%s",
  "%b",
  "\\n",
  "\\0",
  "\\x41",
  "-",
  "--",
  "-n",
  "-e",
  "-- ",
  "$HOME",
  "${HOME}",
  "$0",
  "$@",
  "$'\\x41'",
  "$((1+1))",
  "é",
  "e\u0301",
  "n\u0303\u0323",
  "👍",
  "👨‍👩‍👧",
  "🏳️‍🌈",
  "中文",
  "ש",
  "\u202e",
  "\u00a0",
  "\u2028",
  "\ufeff",
  "\x01",
  "\x1b[31m",
  "\x7f",
  `$(touch ${marker})`,
  `\`touch ${marker}\``,
  `; touch ${marker}`,
  `'; touch ${marker}; '`,
  `"; touch ${marker}; "`,
  `' && touch ${marker} && '`,
  `\\'$(touch ${marker})\\'`
] as const

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/** A NUL cannot be in an argument vector, and a lone surrogate has no UTF-8 encoding. */
const clean = (s: string): string => s.replaceAll("\0", "").replace(loneSurrogate, "\uFFFD")

const tokenArb = Arbitrary.schema(Schema.Union([Schema.Literals(tokens), Schema.String])).pipe(
  Arbitrary.map(clean)
)

/** One arbitrary string: a sequence of tokens and random text. */
const stringArb = Arbitrary.array(tokenArb, { maxLength: 24 }).pipe(Arbitrary.map((parts) => parts.join("")))

/** A batch of strings for one round of shell processes. */
const batchArb = Arbitrary.array(stringArb, { minLength: 100, maxLength: 140 })

/** Strings chosen by hand: empty, option-like, long, deep. */
const fixedCases: ReadonlyArray<string> = [
  "",
  " ",
  "-",
  "--",
  "-n",
  "-e",
  "--help",
  "'",
  "''",
  "\"",
  "\\",
  "\n",
  "\n\n",
  "trailing newline\n",
  "~",
  "~root",
  "~x/y",
  "a/b/c",
  "./x",
  "x/.",
  "$(touch " + marker + ")",
  "`touch " + marker + "`",
  "x".repeat(20_000),
  tokens.join("").repeat(40),
  "👍".repeat(5_000),
  "e\u0301".repeat(3_000),
  "ä".repeat(127),
  ("d".repeat(200) + "/").repeat(8)
]

// -- running -------------------------------------------------------------------------------------

/** Splits output at NULs; every case ends with one, so the last piece is empty. */
const splitNul = (out: Buffer): Array<Buffer> => {
  const pieces: Array<Buffer> = []
  let start = 0
  for (let i = 0; i < out.length; i++) {
    if (out[i] === 0) {
      pieces.push(out.subarray(start, i))
      start = i + 1
    }
  }
  assert.strictEqual(start, out.length, "output does not end with a case separator")
  return pieces
}

const MAX_SCRIPT = 100_000

interface Ran {
  readonly stdout: Buffer
  readonly stderr: string
  readonly status: number | null
}

/** Runs a program to its end, without a shell around it. */
const spawnAsync = (program: string, args: ReadonlyArray<string>, cwd: string): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(program, args, { env: shellEnv, cwd, stdio: ["ignore", "pipe", "pipe"] })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (b: Buffer) => out.push(b))
    child.stderr.on("data", (b: Buffer) => err.push(b))
    child.on("error", reject)
    child.on(
      "close",
      (status) => resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString("utf8"), status })
    )
  })

/**
 * Runs many script fragments through `shell -c`, as few processes as fit the argument size limit.
 * Each fragment is followed by a NUL so that its output can be told apart.
 */
const runScripts = async (
  shell: string,
  fragments: ReadonlyArray<string>,
  cwd: string
): Promise<Array<Buffer>> => {
  const [program, ...args] = splitShell(shell)
  const chunks: Array<string> = []
  let current = ""
  for (const fragment of fragments) {
    const piece = `cd -- ${quote(cwd)} || exit 99\n${fragment}\nprintf '\\0'\n`
    if (current !== "" && Buffer.byteLength(current) + Buffer.byteLength(piece) > MAX_SCRIPT) {
      chunks.push(current)
      current = ""
    }
    current += piece
  }
  if (current !== "") chunks.push(current)
  const outputs: Array<Buffer> = []
  for (const chunk of chunks) {
    const r = await spawnAsync(program!, [...args, chunk], cwd)
    assert.strictEqual(r.stderr, "", `${shell} wrote to stderr`)
    outputs.push(r.stdout)
  }
  return splitNul(Buffer.concat(outputs))
}

/**
 * Runs argument vectors exactly as given (no shell parses them), each in its own directory,
 * through one bash process reading NUL-separated records from a file.
 */
const runner = `
while IFS= read -r -d '' dir; do
  IFS= read -r -d '' n || exit 3
  args=()
  i=0
  while [ "$i" -lt "$n" ]; do
    IFS= read -r -d '' a || exit 4
    args+=("$a")
    i=$((i + 1))
  done
  (cd -- "$dir" && exec "\${args[@]}") </dev/null
  printf '\\0'
done < "$1"
`

let recordsCount = 0

const runArgvs = async (
  records: ReadonlyArray<{ readonly argv: ReadonlyArray<string>; readonly cwd: string }>
) => {
  const body = records.map(({ argv, cwd }) =>
    [cwd, String(argv.length), ...argv].map((s) => `${s}\0`).join("")
  ).join("")
  const file = path.join(root, `records-${recordsCount++}`)
  fs.writeFileSync(file, body)
  const r = await spawnAsync("/bin/bash", ["-c", runner, "runner", file], root)
  fs.rmSync(file)
  assert.strictEqual(r.status, 0, `argv runner failed: ${r.stderr}`)
  assert.strictEqual(r.stderr, "", "a command wrote to stderr")
  return splitNul(r.stdout)
}

const show = (s: string): string => {
  const json = JSON.stringify(s)
  return json.length > 200 ? `${json.slice(0, 200)}... (${s.length} chars)` : json
}

/** Checks every case's output on its own, naming the first one that differs. */
const expectOutputs = (
  what: string,
  labels: ReadonlyArray<string>,
  expected: ReadonlyArray<Buffer>,
  actual: ReadonlyArray<Buffer>
) => {
  for (let i = 0; i < expected.length; i++) {
    const got = actual[i]
    if (got === undefined || !got.equals(expected[i]!)) {
      assert.fail(
        `${what}: case ${i} ${labels[i]}\n  expected ${show(expected[i]!.toString())}\n  got      ${
          got === undefined ? "nothing" : show(got.toString())
        }`
      )
    }
  }
  assert.strictEqual(actual.length, expected.length, `${what}: number of outputs`)
}

const assertNoInjection = () =>
  assert.isFalse(fs.existsSync(marker), `an injected command ran: ${marker} exists`)

// -- quote ---------------------------------------------------------------------------------------

const checkQuote = async (cases: ReadonlyArray<string>) => {
  const labels = cases.map(show)
  const expected = cases.map((s) => Buffer.from(s, "utf8"))
  const outputs = await Promise.all(
    shells.map((shell) => runScripts(shell, cases.map((s) => `printf %s ${quote(s)}`), root))
  )
  shells.forEach((shell, i) => expectOutputs(`quote through ${shell}`, labels, expected, outputs[i]!))
  assertNoInjection()
}

// -- build ---------------------------------------------------------------------------------------

const baseSpec = {
  useSudo: false,
  sudoUser: undefined,
  sudoPrompt: undefined,
  cwd: undefined,
  env: {}
} as const

const VAR = "THREADBARE_VALUE"

/** Whether a string can be made into a real directory under `dirs` and named relatively. */
const usableDir = (s: string): boolean => {
  if (s === "" || s.startsWith("/") || s === "~" || s.startsWith("~/")) return false
  if (Buffer.byteLength(s) > 2000) return false
  return s.split("/").every((part) => part !== ".." && Buffer.byteLength(part) <= 255)
}

interface Case {
  readonly label: string
  readonly built: BuiltCommand
  readonly expected: Buffer
  /** The directory a caller would spawn `argv` in. */
  readonly spawnCwd: string
}

const mustBuild = (spec: CommandSpec): BuiltCommand => {
  const r = build(spec)
  if (Result.isFailure(r)) return assert.fail(`build failed: ${r.failure.message}`)
  return r.success
}

const casesFor = (s: string, wrappers: ReadonlyArray<string>): Array<Case> => {
  const cases: Array<Case> = []
  const value = Buffer.from(s, "utf8")
  const add = (label: string, spec: CommandSpec, expected: Buffer, dir: string | undefined) => {
    const built = mustBuild(spec)
    cases.push({
      label: `${label} ${show(s)}`,
      built,
      expected,
      spawnCwd: built.cwdInArgv || dir === undefined ? dirs : path.join(dirs, dir)
    })
  }
  const dirOk = usableDir(s)
  const dirExpected = dirOk
    ? Buffer.from(`${fs.realpathSync(path.join(dirs, s))}\n`, "utf8")
    : Buffer.alloc(0)
  for (const shell of wrappers) {
    add(
      `[${shell}] env value`,
      { ...baseSpec, command: `printf %s "$${VAR}"`, useShell: true, shell, env: { [VAR]: s } },
      value,
      undefined
    )
    add(
      `[${shell}] argument`,
      { ...baseSpec, command: ["printf", "%s", s], useShell: true, shell },
      value,
      undefined
    )
    if (dirOk) {
      add(`[${shell}] cwd`, { ...baseSpec, command: "pwd -P", useShell: true, shell, cwd: s }, dirExpected, s)
    }
  }
  const noShell = { ...baseSpec, useShell: false, shell: "/bin/bash -l -c" }
  add("[no shell] argument", { ...noShell, command: ["printf", "%s", s] }, value, undefined)
  add(
    "[no shell] env value of an argument list",
    {
      ...noShell,
      command: ["/bin/sh", "-c", `printf %s "$${VAR}"`],
      env: { [VAR]: s }
    },
    value,
    undefined
  )
  add(
    "[no shell] env value of a command line",
    {
      ...noShell,
      command: `printf %s "$${VAR}"`,
      env: { [VAR]: s }
    },
    value,
    undefined
  )
  if (dirOk) {
    add("[no shell] cwd of an argument list", { ...noShell, command: ["pwd", "-P"], cwd: s }, dirExpected, s)
    add("[no shell] cwd of a command line", { ...noShell, command: "pwd -P", cwd: s }, dirExpected, s)
  }
  return cases
}

const checkBuild = async (strings: ReadonlyArray<string>, wrappers: ReadonlyArray<string>) => {
  for (const s of strings) {
    if (usableDir(s)) fs.mkdirSync(path.join(dirs, s), { recursive: true })
  }
  const cases = strings.flatMap((s) => casesFor(s, wrappers))
  const labels = cases.map((c) => c.label)
  const expected = cases.map((c) => c.expected)
  // `line` is what an SSH server hands to the login shell: try it with both shells.
  // `argv` is what a local spawn runs, with no shell around it.
  const [viaSh, viaBash, viaArgv] = await Promise.all([
    ...fastShells.map((outer) => runScripts(outer, cases.map((c) => c.built.line), dirs)),
    runArgvs(cases.map((c) => ({ argv: c.built.argv, cwd: c.spawnCwd })))
  ])
  expectOutputs(`line through ${fastShells[0]}`, labels, expected, viaSh!)
  expectOutputs(`line through ${fastShells[1]}`, labels, expected, viaBash!)
  expectOutputs("argv", labels, expected, viaArgv!)
  assertNoInjection()
}

// -- tests ---------------------------------------------------------------------------------------

describe("shell", () => {
  describe("quote", () => {
    it("leaves safe words alone and quotes everything else", () => {
      assert.strictEqual(quote("abc-1.2_x/y:z@h%+=,"), "abc-1.2_x/y:z@h%+=,")
      assert.strictEqual(quote(""), "''")
      assert.strictEqual(quote("a b"), "'a b'")
      assert.strictEqual(quote("it's"), `'it'\\''s'`)
      assert.strictEqual(join(["printf", "%s\\n", "a b", ""]), `printf '%s\\n' 'a b' ''`)
    })

    it.live("hand-picked strings arrive byte for byte through sh and bash -l", () =>
      Effect.promise(() => checkQuote(fixedCases)))

    it.live.prop(
      "arbitrary strings arrive byte for byte through sh and bash -l, and nothing else runs",
      [batchArb],
      ([cases]) => Effect.promise(() => checkQuote(cases)),
      { timeout: 120_000, arbitrary: { runs: 30, size: 30, maxShrinks: 40 } }
    )
  })

  describe("build", () => {
    it.live("hand-picked strings arrive byte for byte as cwd, env value and argument", () =>
      Effect.promise(() => checkBuild(fixedCases, allShells)))

    it.live.prop(
      "arbitrary strings arrive byte for byte as cwd, env value and argument, in sh and bash",
      [batchArb],
      ([strings]) => Effect.promise(() => checkBuild(strings, fastShells)),
      { timeout: 300_000, arbitrary: { runs: 8, size: 30, maxShrinks: 20 } }
    )

    it("runs the command as written, after cd and export, inside the shell", () => {
      const built = mustBuild({
        ...baseSpec,
        command: "echo $A | tr a-z A-Z",
        useShell: true,
        shell: "/bin/bash -l -c",
        cwd: "/srv/my app",
        env: { A: "x y", B: "1" }
      })
      assert.strictEqual(built.display, "echo $A | tr a-z A-Z")
      assert.deepStrictEqual(built.argv, [
        "/bin/bash",
        "-l",
        "-c",
        "cd -- '/srv/my app' && export A='x y' B=1 && echo $A | tr a-z A-Z"
      ])
      assert.strictEqual(built.line, `/bin/bash -l -c ${quote(built.argv[3]!)}`)
      assert.isTrue(built.cwdInArgv)
    })

    it("an argument list is shown quoted and joined", () => {
      const built = mustBuild({
        ...baseSpec,
        command: ["git", "commit", "-m", "it's done"],
        useShell: true,
        shell: "/bin/sh -c"
      })
      assert.strictEqual(built.display, `git commit -m 'it'\\''s done'`)
      const noShell = mustBuild({
        ...baseSpec,
        command: ["git", "status"],
        useShell: false,
        shell: "/bin/sh -c",
        cwd: "/r"
      })
      assert.deepStrictEqual(noShell.argv, ["git", "status"])
      assert.isFalse(noShell.cwdInArgv)
      assert.strictEqual(noShell.line, "cd -- /r && git status")
    })

    it("a user's shell text still runs as shell text (pipes, variables, globs)", () => {
      const built = mustBuild({
        ...baseSpec,
        command: "printf '%s-' $(echo a b) | tr a-z A-Z; echo \"$HOME\"",
        useShell: true,
        shell: "/bin/sh -c"
      })
      const r = spawnSync(built.argv[0]!, built.argv.slice(1), { env: shellEnv, encoding: "utf8" })
      assert.strictEqual(r.stdout, `A-B-${home}\n`)
    })

    it("the command's own exit status comes back through cd and export", () => {
      for (const shell of shells) {
        const built = mustBuild({
          ...baseSpec,
          command: "exit 7",
          useShell: true,
          shell,
          cwd: "/",
          env: { A: "1" }
        })
        const r = spawnSync(built.argv[0]!, built.argv.slice(1), { env: shellEnv })
        assert.strictEqual(r.status, 7, shell)
        const failing = mustBuild({
          ...baseSpec,
          command: "echo ran",
          useShell: true,
          shell,
          cwd: path.join(root, "missing")
        })
        const f = spawnSync(failing.argv[0]!, failing.argv.slice(1), { env: shellEnv, encoding: "utf8" })
        assert.notStrictEqual(f.status, 0, `${shell}: cd into a missing dir must stop the command`)
        assert.strictEqual(f.stdout, "", `${shell}: the command must not run after a failed cd`)
      }
    })
  })

  describe("home directories", () => {
    it("a ~ or ~/ directory is expanded by the shell, the rest quoted and anchored", () => {
      assert.strictEqual(quoteDir("~"), "~")
      assert.strictEqual(quoteDir("~/"), "~/")
      assert.strictEqual(quoteDir("~/app"), "~/app")
      assert.strictEqual(quoteDir("~/my app"), "~/'my app'")
      // Anything else is a name: relative ones are anchored at ./ (no CDPATH, no `cd -`).
      assert.strictEqual(quoteDir("~root"), "'./~root'")
      assert.strictEqual(quoteDir("-"), "./-")
      assert.strictEqual(quoteDir("~x y"), "'./~x y'")
      assert.strictEqual(quoteDir("/srv/my app"), "'/srv/my app'")
    })

    it("cd into ~, ~/ and ~/<odd name> lands under HOME, in sh and bash -l, by line and argv", () => {
      const odd = "my app/it's $(x) \"q\" 👍"
      fs.mkdirSync(path.join(home, odd), { recursive: true })
      const cases: Array<[string, string]> = [
        ["~", home],
        ["~/", home],
        [`~/${odd}`, path.join(home, odd)]
      ]
      for (const shell of shells) {
        for (const [dir, want] of cases) {
          const built = mustBuild({ ...baseSpec, command: "pwd -P", useShell: true, shell, cwd: dir })
          const viaArgv = spawnSync(built.argv[0]!, built.argv.slice(1), {
            env: shellEnv,
            cwd: root,
            encoding: "utf8"
          })
          assert.strictEqual(viaArgv.stdout, `${want}\n`, `${shell} argv ${dir}`)
          const viaLine = spawnSync("/bin/sh", ["-c", built.line], {
            env: shellEnv,
            cwd: root,
            encoding: "utf8"
          })
          assert.strictEqual(viaLine.stdout, `${want}\n`, `${shell} line ${dir}`)
        }
      }
    })

    it("a directory named like ~ but not a home reference is taken literally", () => {
      fs.mkdirSync(path.join(dirs, "~x y"), { recursive: true })
      const built = mustBuild({
        ...baseSpec,
        command: "pwd -P",
        useShell: true,
        shell: "/bin/sh -c",
        cwd: "~x y"
      })
      const r = spawnSync(built.argv[0]!, built.argv.slice(1), { env: shellEnv, cwd: dirs, encoding: "utf8" })
      assert.strictEqual(r.stdout, `${path.join(dirs, "~x y")}\n`)
    })
  })

  describe("sudo", () => {
    /** The words a shell reads from a command line, without running it. */
    const wordsOf = (line: string): Array<string> => {
      const r = spawnSync("/bin/sh", ["-c", `set -- ${line}; printf '%s\\0' "$@"`], { env: shellEnv })
      assert.strictEqual(r.status, 0, r.stderr.toString())
      return splitNul(r.stdout).map((b) => b.toString("utf8"))
    }

    it("non-interactive by default: sudo -n -u user -- <shell> <script>", () => {
      const built = mustBuild({
        ...baseSpec,
        command: "systemctl restart app",
        useShell: true,
        shell: "/bin/bash -l -c",
        useSudo: true,
        sudoUser: "deploy",
        cwd: "/srv/app",
        env: { A: "1" }
      })
      const script = "cd -- /srv/app && export A=1 && systemctl restart app"
      assert.deepStrictEqual(built.argv, [
        "sudo",
        "-n",
        "-u",
        "deploy",
        "--",
        "/bin/bash",
        "-l",
        "-c",
        script
      ])
      assert.deepStrictEqual(wordsOf(built.line), built.argv)
      assert.strictEqual(built.display, "systemctl restart app")
    })

    it("without sudoUser there is no -u (root)", () => {
      const built = mustBuild({
        ...baseSpec,
        command: "id -u",
        useShell: true,
        shell: "/bin/sh -c",
        useSudo: true
      })
      assert.deepStrictEqual(built.argv, ["sudo", "-n", "--", "/bin/sh", "-c", "id -u"])
      assert.deepStrictEqual(wordsOf(built.line), built.argv)
    })

    it("with a prompt: sudo -S -p <prompt> -u user --, and the prompt survives quoting", () => {
      const prompt = "[sudo] password for 'deploy': $(touch " + marker + ")"
      const built = mustBuild({
        ...baseSpec,
        command: "whoami",
        useShell: true,
        shell: "/bin/bash -l -c",
        useSudo: true,
        sudoUser: "www-data",
        sudoPrompt: prompt
      })
      assert.deepStrictEqual(built.argv, [
        "sudo",
        "-S",
        "-p",
        prompt,
        "-u",
        "www-data",
        "--",
        "/bin/bash",
        "-l",
        "-c",
        "whoami"
      ])
      assert.notInclude(built.argv, "-n")
      assert.deepStrictEqual(wordsOf(built.line), built.argv)
      assertNoInjection()
    })

    it("without a shell: sudo comes first, variables go through env(1)", () => {
      const list = mustBuild({
        ...baseSpec,
        command: ["/usr/bin/install", "-m", "644", "a b", "/etc/x"],
        useShell: false,
        shell: "/bin/sh -c",
        useSudo: true,
        env: { K: "v w" }
      })
      assert.deepStrictEqual(list.argv, [
        "sudo",
        "-n",
        "--",
        "env",
        "K=v w",
        "/usr/bin/install",
        "-m",
        "644",
        "a b",
        "/etc/x"
      ])
      assert.deepStrictEqual(wordsOf(list.line), list.argv)
      const text = mustBuild({
        ...baseSpec,
        command: "ls /root",
        useShell: false,
        shell: "/bin/sh -c",
        useSudo: true,
        sudoUser: "admin"
      })
      assert.strictEqual(text.line, "sudo -n -u admin -- ls /root")
    })
  })

  describe("validation", () => {
    const failure = (spec: Partial<CommandSpec>): SettingsError => {
      const r = build({ ...baseSpec, command: "true", useShell: true, shell: "/bin/sh -c", ...spec })
      if (Result.isSuccess(r)) return assert.fail(`expected a SettingsError for ${JSON.stringify(spec)}`)
      assert.instanceOf(r.failure, SettingsError)
      return r.failure
    }

    it("invalid variable names are refused with the name in the error", () => {
      for (const name of ["1A", "A-B", "", "A B", "A=B", "$(x)", "é", "A;B"]) {
        const e = failure({ env: { OK: "1", [name]: "v" } })
        assert.strictEqual(e.setting, "env")
        assert.strictEqual(e.value, name)
        assert.include(e.message, JSON.stringify(name))
      }
    })

    it("valid variable names are accepted", () => {
      for (const name of ["_", "A", "a_b", "A1", "_1", "PATH"]) {
        assert.isTrue(
          Result.isSuccess(
            build({ ...baseSpec, command: "true", useShell: true, shell: "/bin/sh -c", env: { [name]: "v" } })
          ),
          name
        )
      }
    })

    it("a sudo user that is empty or looks like an option is refused", () => {
      for (const user of ["", "-u", "--help", "-"]) {
        const e = failure({ useSudo: true, sudoUser: user })
        assert.strictEqual(e.setting, "sudoUser")
        assert.strictEqual(e.value, user)
      }
    })

    it("a NUL byte in the command, a variable, the directory or the sudo user is refused", () => {
      assert.strictEqual(failure({ command: "echo a\0b" }).setting, "command")
      assert.strictEqual(failure({ command: ["echo", "a\0b"] }).setting, "command")
      assert.include(failure({ env: { A: "x\0y" } }).setting, "env")
      assert.strictEqual(failure({ cwd: "a\0b" }).setting, "remoteWorkingDir")
      assert.strictEqual(failure({ useSudo: true, sudoUser: "ro\0ot" }).setting, "sudoUser")
    })

    it("an empty argument list and an empty working directory are refused", () => {
      assert.strictEqual(failure({ command: [] }).setting, "command")
      assert.strictEqual(failure({ cwd: "" }).setting, "remoteWorkingDir")
    })
  })

  describe("splitShell", () => {
    it("splits a trusted shell setting on whitespace", () => {
      assert.deepStrictEqual(splitShell(" /bin/bash  -l\t-c "), ["/bin/bash", "-l", "-c"])
      assert.deepStrictEqual(splitShell("/bin/sh -c"), ["/bin/sh", "-c"])
    })
  })
})
