/**
 * Type-checks every ```ts example in the JSDoc of the modules under `src/` (the public ones, and the
 * internal ones whose declarations they re-export, which the API reference shows with their docs)
 * and in README.md, so an example cannot drift from the API it shows.
 *
 *   scripts/node.sh node scripts/check-doc-examples.ts
 *
 * Each example becomes a `.ts` module under `.tmp/doc-examples/`, checked with the project's own
 * `tsc` and compiler options (less the unused-binding checks: an example may show a value it does not
 * use). `effect-threadbare` resolves to `src/index.ts`. The failures are printed as the file and line
 * of the example's own text, and the exit status is non-zero when any example fails.
 *
 * What an example may leave out, and how it is completed:
 * - imports: a namespace of effect-threadbare (`Operations`, `Settings`, ...), of effect (`Effect`,
 *   `Schema`, ...) or of @effect/platform-node (`NodeRuntime`, ...) that the example uses but does not
 *   import is imported for it;
 * - a generator body: an example with `yield*` outside any `function*` is the body of
 *   `Effect.gen(function*() { ... })` (its `export`s become plain declarations);
 * - names it uses without defining, such as a task or a host list: a line `// declare: name: Type`
 *   in the example declares one (`declare const name: Type`), and the `contexts` table below
 *   declares the names a module's examples share (only those an example uses and does not define);
 * - other files: an example whose first line is a comment naming a file (`// tasks.ts`, or
 *   `// tasks.ts: what it holds`) is saved under that name beside the other examples of the same
 *   document, so a later example can import it (`import { deploy } from "./tasks.ts"`).
 * An example that is not meant to compile (a sketch with `...`) says so with a line
 * `// doc-examples: skip`.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const outDir = path.join(root, ".tmp", "doc-examples")

interface Example {
  /** The document, from the repository's root: `src/Execute.ts`, `README.md`. */
  readonly doc: string
  /** The line of the document that holds the example's first line. */
  readonly line: number
  readonly lines: ReadonlyArray<string>
}

/** The ```ts blocks of a JSDoc comment (` * ` prefixes removed) or of Markdown. */
const examplesOf = (doc: string, text: string): Array<Example> => {
  const jsdoc = doc.endsWith(".ts")
  const all = text.split("\n")
  const found: Array<Example> = []
  let current: { line: number; lines: Array<string> } | undefined
  for (let i = 0; i < all.length; i++) {
    const raw = all[i]!
    const line = jsdoc ? /^\s*\*( |$)/.test(raw) ? raw.replace(/^\s*\* ?/, "") : undefined : raw
    if (line === undefined) {
      current = undefined
      continue
    }
    if (current === undefined) {
      if (/^```(ts|typescript)\s*$/.test(line.trim())) current = { line: i + 2, lines: [] }
    } else if (line.trim() === "```") {
      found.push({ doc, line: current.line, lines: current.lines })
      current = undefined
    } else {
      current.lines.push(line)
    }
  }
  return found
}

// --- what examples may leave out ------------------------------------------------------------------

const threadbareModules = [
  ...fs.readFileSync(path.join(root, "src/index.ts"), "utf8")
    .matchAll(/export \* as (\w+) from/g)
].map((m) => m[1]!)

/** Implicit imports: the namespace and the package it comes from. */
const implicit: ReadonlyMap<string, string> = new Map([
  ...threadbareModules.map((name) => [name, "effect-threadbare"] as const),
  ...[
    "Cause",
    "Config",
    "Console",
    "Context",
    "Data",
    "Duration",
    "Effect",
    "Exit",
    "Fiber",
    "Layer",
    "Option",
    "Queue",
    "Redacted",
    "Ref",
    "Schedule",
    "Schema",
    "Scope",
    "Sink",
    "Stream"
  ].map((name) => [name, "effect"] as const),
  ...["NodeRuntime", "NodeServices", "NodeFileSystem"].map((name) => [name, "@effect/platform-node"] as const)
])

/**
 * The names the examples of one document share without defining them, as declarations; an example
 * gets those it uses and does not define itself.
 */
const contexts: Record<
  string,
  { readonly names?: Record<string, string>; readonly files?: Record<string, string> }
> = {
  "src/Execute.ts": {
    names: {
      deploy: "declare const deploy: Task.Task<void, string, Task.OperationError>",
      check: "declare const check: Task.Task<void, string, Task.OperationError>",
      version: "declare const version: Task.Task<void, string, Task.OperationError>",
      build: "declare const build: Task.Task<string, string, Task.OperationError>",
      readVersion: "declare const readVersion: Task.Task<string, string, Task.OperationError>",
      measure: "declare const measure: Task.Task<string, number, Task.OperationError>",
      hosts: "declare const hosts: ReadonlyArray<string>",
      fleet: "declare const fleet: ReadonlyArray<string>",
      paths: "declare const paths: ReadonlyArray<string>",
      results:
        "declare const results: ReadonlyArray<Execute.HostOutcome<string, Task.OperationError | Execute.WorkerCrashed>>",
      settings: "declare const settings: Settings.Settings",
      output: "declare const output: Output.Writer"
    },
    files: {
      "tasks.ts": [
        `import type { Task } from "effect-threadbare"`,
        `export declare const deploy: Task.Task<void, string, Task.OperationError>`
      ].join("\n")
    }
  },
  "src/Task.ts": {
    names: {
      deploy: "declare const deploy: Task.Task<{ readonly version: string }, string, Errors.CommandFailed>"
    }
  },
  "src/Ssh.ts": {
    names: { program: "declare const program: Effect.Effect<void, never, Ssh.SshConnections>" }
  },
  "src/internal/local/process.ts": {
    names: { archive: "declare const archive: string" }
  },
  "src/internal/ssh/port.ts": {
    names: { connection: "declare const connection: Ssh.Connection" }
  },
  "src/internal/ssh/sftpError.ts": {
    names: {
      sftp: "declare const sftp: Ssh.SftpSession",
      path: "declare const path: string"
    }
  },
  "README.md": {
    names: { archive: "declare const archive: string" }
  }
}

// --- from an example to a module ------------------------------------------------------------------

interface Generated {
  readonly example: Example
  readonly file: string
  /** For each line of the generated file, the document's line, or undefined for added lines. */
  readonly origin: ReadonlyArray<number | undefined>
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** Whether the example defines `name` itself: imports it, declares it, or destructures it. */
const defines = (code: string, name: string): boolean => {
  const n = escape(name)
  return [
    `\\b(const|let|var|function\\*?|class|type|interface|enum|namespace)\\s+${n}\\b`,
    `\\b(const|let|var)\\s*[{[][^=}\\]\\n]*?[\\s{[,]${n}\\s*[,}\\]:]`,
    `^import\\b[^;]*?[\\s{,]${n}\\b[^;]*?\\bfrom\\b`,
    `^import\\s+(type\\s+)?${n}\\b`,
    `\\bas\\s+${n}\\b`
  ].some((pattern) => new RegExp(pattern, "m").test(code))
}

const uses = (code: string, name: string): boolean => new RegExp(`(^|[^.\\w$])${escape(name)}\\b`).test(code)

const generate = (example: Example, index: number): Generated | undefined => {
  const source = example.lines
  if (source.some((l) => l.trim() === "// doc-examples: skip")) return undefined
  const named = /^\/\/\s*([\w.-]+\.ts)\b/.exec(source[0] ?? "")
  const docDir = example.doc.replace(/[^\w]+/g, "_")
  const file = path.join(
    outDir,
    docDir,
    named?.[1] ?? `example-${String(index).padStart(3, "0")}-L${example.line}.ts`
  )

  // The example's own imports stay at the top; the rest is the body.
  const imports: Array<[string, number]> = []
  const body: Array<[string, number | undefined]> = []
  let inImport = false
  source.forEach((text, i) => {
    const line = example.line + i
    if (inImport || /^import\b/.test(text)) {
      imports.push([text, line])
      inImport = !/\bfrom\s+["']|^import\s+["']/.test(text)
      return
    }
    // A declaration stays at the top level, outside the generator an example may be wrapped in.
    const declare = /^\s*\/\/\s*declare:\s*(\w+)\s*:\s*(.+)$/.exec(text)
    if (declare) imports.push([`declare const ${declare[1]}: ${declare[2]}`, line])
    else body.push([text, line])
  })

  let code = source.join("\n")
  const generator = /\byield\*/.test(code) && !/function\s*\*/.test(code)
  const bodyLines: Array<[string, number | undefined]> = generator
    ? [
      ["export const example = Effect.gen(function*() {", undefined],
      ...body.map(([text, line]): [string, number | undefined] => [text.replace(/^export\s+/, ""), line]),
      ["})", undefined]
    ]
    : body
  code = [...imports, ...bodyLines].map(([text]) => text).join("\n")

  const added: Array<string> = []
  for (const [name, from] of implicit) {
    if (uses(code, name) && !defines(code, name)) added.push(`import { ${name} } from "${from}"`)
  }
  const declarations: Array<string> = []
  for (const [name, declaration] of Object.entries(contexts[example.doc]?.names ?? {})) {
    if (uses(code, name) && !defines(code, name)) declarations.push(declaration)
  }
  // A context's declaration may itself name a namespace the example does not import.
  for (const [name, from] of implicit) {
    if (declarations.some((d) => uses(d, name)) && !uses(code, name) && !defines(code, name)) {
      added.push(`import { ${name} } from "${from}"`)
    }
  }
  added.push(...declarations)

  const all: Array<[string, number | undefined]> = [
    ...imports,
    ...added.map((text): [string, undefined] => [text, undefined]),
    ...bodyLines,
    ["export {}", undefined]
  ]
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, all.map(([text]) => text).join("\n") + "\n")
  return { example, file, origin: all.map(([, line]) => line) }
}

// --- the check ------------------------------------------------------------------------------------

// All of src/, internal modules too: the API reference shows the docs of the internal declarations
// a public module re-exports (Ssh's connection shapes, Transfer's options, ...), examples included.
const docs = [
  ...fs.readdirSync(path.join(root, "src"), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
    .map((f) => `src/${f.split(path.sep).join("/")}`)
    .sort(),
  "README.md"
]
fs.rmSync(outDir, { recursive: true, force: true })
fs.mkdirSync(outDir, { recursive: true })

for (const [doc, context] of Object.entries(contexts)) {
  for (const [name, text] of Object.entries(context.files ?? {})) {
    const file = path.join(outDir, doc.replace(/[^\w]+/g, "_"), name)
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, `${text}\n`)
  }
}

const generated: Array<Generated> = []
let skipped = 0
for (const doc of docs) {
  examplesOf(doc, fs.readFileSync(path.join(root, doc), "utf8")).forEach((example, i) => {
    const one = generate(example, i)
    if (one === undefined) skipped++
    else generated.push(one)
  })
}

const base = JSON.parse(fs.readFileSync(path.join(root, "tsconfig.json"), "utf8")) as {
  compilerOptions: Record<string, unknown>
}
fs.writeFileSync(
  path.join(outDir, "tsconfig.json"),
  JSON.stringify(
    {
      compilerOptions: {
        ...base.compilerOptions,
        noUnusedLocals: false,
        noUnusedParameters: false,
        noEmit: true,
        paths: {
          "effect-threadbare": [path.join(root, "src/index.ts")],
          "effect-threadbare/*": [path.join(root, "src/*.ts")]
        }
      },
      include: ["**/*.ts"]
    },
    null,
    2
  )
)

const runTsc = (): string => {
  try {
    execFileSync(
      path.join(root, "node_modules/.bin/tsc"),
      ["-p", path.join(outDir, "tsconfig.json"), "--pretty", "false"],
      { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }
    )
    return ""
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string }
    return `${failed.stdout ?? ""}${failed.stderr ?? ""}`
  }
}

const byFile = new Map(generated.map((g) => [path.resolve(g.file), g]))
const failures = new Map<Generated, Array<string>>()
const unplaced: Array<string> = []

/** Files the errors of `output` belong to, with each error placed on the document's line. */
const readErrors = (output: string): Set<Generated> => {
  const seen = new Set<Generated>()
  let last: Array<string> | undefined
  // tsc's lines: `path(line,col): error TS2304: message`, continued by indented lines.
  for (const line of output.split("\n")) {
    const m = /^(.+?)\((\d+),(\d+)\): (error .*)$/.exec(line)
    if (m === null) {
      if (line.startsWith(" ") && last !== undefined) last.push(`      ${line.trim()}`)
      else if (line.trim() !== "") unplaced.push(line)
      continue
    }
    const g = byFile.get(path.resolve(root, m[1]!))
    if (g === undefined) {
      unplaced.push(line)
      last = undefined
      continue
    }
    seen.add(g)
    const at = g.origin[Number(m[2]) - 1]
    const list = failures.get(g) ?? []
    list.push(`    ${at === undefined ? `(added line ${m[2]})` : `${g.example.doc}:${at}`}: ${m[4]}`)
    failures.set(g, list)
    last = list
  }
  return seen
}

// tsc reports no type error while any file has a syntax error, so the examples that do not parse
// are reported and set aside, and the rest checked again.
for (let round = 0; round < 10; round++) {
  const seen = readErrors(runTsc())
  const broken = [...seen].filter((g) => failures.get(g)!.some((e) => /error TS1\d{3}:/.test(e)))
  if (broken.length === 0 || broken.length < seen.size) break
  for (const g of broken) fs.rmSync(g.file)
}

for (const [g, list] of failures) {
  console.log(`${g.example.doc}:${g.example.line} (${path.relative(root, g.file)})`)
  for (const line of list) console.log(line)
}
for (const line of unplaced) console.log(line)
const failedCount = failures.size
console.log(
  `doc examples: ${generated.length - failedCount} compile, ${failedCount} fail` +
    (skipped > 0 ? `, ${skipped} skipped` : "")
)
process.exitCode = failedCount > 0 || unplaced.length > 0 ? 1 : 0
