/**
 * The architecture, checked: the rules of `src/` that no type checker or linter enforces, read from
 * the syntax trees of the sources (oxc's parser, shipped with rolldown), not from text patterns, so
 * comments and strings cannot hide or fake an import or a declaration.
 *
 * - ssh2 is imported only by the SSH adapter (`src/internal/ssh/`), type imports included;
 * - no import cycle among the modules of `src/`, type-only imports included (a cycle of types is
 *   still two layers that each know the other);
 * - no file of `src/` over 600 lines;
 * - no module-level mutable state: state belongs to the layer that owns it, and a module global
 *   outlives every layer and every test;
 * - `node:fs` only in the adapter modules listed below.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseAst } from "rolldown/parseAst"

const root = path.resolve(import.meta.dirname, "..")
const srcDir = path.join(root, "src")

/** The adapter folder, the only place ssh2 may be named. */
const sshAdapter = "src/internal/ssh/"

const maxLines = 600

/**
 * The one module allowed to import Node's file system: the adapter through which every operation
 * reaches the local disk. A listed module that no longer imports `node:fs` fails the check too,
 * so the list never claims more than is true.
 */
const fsAllowed: ReadonlyArray<string> = ["src/internal/local/files.ts"]

/** The specifiers that name Node's file system. */
const fsModules = new Set(["fs", "node:fs", "fs/promises", "node:fs/promises"])

/**
 * Module-level constants built with `new` that hold no state, so may live at the top of a module.
 * Any other `new` at the top of a module counts as state (Map, Set, WeakMap, URL, ...).
 */
const statelessConstructors: ReadonlyMap<string, string> = new Map([
  ["TextEncoder", "encode() keeps nothing between calls"],
  ["RegExp", "without the g or y flag, a RegExp's lastIndex is neither read nor written"]
])

/**
 * Module-level bindings allowed to hold state despite the rule, as `file:name`, each with its
 * reason. Empty, and meant to stay so: an entry here is a debt, not a design.
 */
const stateAllowed: ReadonlyMap<string, string> = new Map([])

/** The helpers of effect's mutable data types and other makers of shared state outside a layer. */
const stateMakers =
  /^(MutableRef|MutableHashMap|MutableHashSet|MutableList|MutableQueue)\.|(^|\.)(makeUnsafe|unsafeMake|globalValue)$/

/** The array and collection methods that change their receiver. */
const mutators = new Set([
  "push",
  "pop",
  "shift",
  "unshift",
  "splice",
  "sort",
  "reverse",
  "fill",
  "copyWithin",
  "set",
  "add",
  "delete",
  "clear"
])

// --- the sources and their syntax trees -----------------------------------------------------------

interface Node {
  readonly type: string
  readonly start: number
  readonly end: number
  readonly [key: string]: unknown
}

interface Source {
  /** The path from the repository's root, with forward slashes: `src/internal/ssh/client.ts`. */
  readonly file: string
  readonly text: string
  readonly program: Node
  readonly lineOf: (offset: number) => number
}

const isNode = (value: unknown): value is Node =>
  typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string"

/** Every node under `node`, depth first, `node` included. */
const walk = function*(node: Node): Generator<Node> {
  yield node
  for (const key of Object.keys(node)) {
    const value = node[key]
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) yield* walk(item)
    } else if (isNode(value)) {
      yield* walk(value)
    }
  }
}

const listTs = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts"))
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort()

const readSource = (absolute: string): Source => {
  const text = fs.readFileSync(absolute, "utf8")
  const newlines: Array<number> = []
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) newlines.push(i)
  const lineOf = (offset: number): number => {
    let low = 0
    let high = newlines.length
    while (low < high) {
      const mid = (low + high) >> 1
      if (newlines[mid]! < offset) low = mid + 1
      else high = mid
    }
    return low + 1
  }
  const program = parseAst(text, { lang: "ts" }, absolute) as unknown as Node
  return { file: path.relative(root, absolute).split(path.sep).join("/"), text, program, lineOf }
}

const sources: ReadonlyArray<Source> = listTs(srcDir).map(readSource)

// --- imports ------------------------------------------------------------------------------------

interface Import {
  readonly specifier: string
  readonly line: number
  readonly typeOnly: boolean
}

const literal = (node: unknown): string | undefined =>
  isNode(node) && node.type === "Literal" && typeof node.value === "string" ? node.value : undefined

/**
 * Every module a source names: static imports and re-exports, `import x = require()`, dynamic
 * `import()` and `require()` of a literal, and `import("...")` in type positions.
 */
const importsOf = (source: Source): Array<Import> => {
  const found: Array<Import> = []
  const add = (specifier: string | undefined, node: Node, typeOnly: boolean) => {
    if (specifier !== undefined) found.push({ specifier, line: source.lineOf(node.start), typeOnly })
  }
  for (const node of walk(source.program)) {
    switch (node.type) {
      case "ImportDeclaration": {
        const specifiers = (node.specifiers ?? []) as ReadonlyArray<Node>
        const typeOnly = node.importKind === "type" ||
          (specifiers.length > 0 && specifiers.every((s) => s.importKind === "type"))
        add(literal(node.source), node, typeOnly)
        break
      }
      case "ExportNamedDeclaration":
      case "ExportAllDeclaration": {
        const specifiers = (node.specifiers ?? []) as ReadonlyArray<Node>
        const typeOnly = node.exportKind === "type" ||
          (specifiers.length > 0 && specifiers.every((s) => s.exportKind === "type"))
        add(literal(node.source), node, typeOnly)
        break
      }
      case "ImportExpression":
        add(literal(node.source), node, false)
        break
      case "TSImportType":
        add(literal(node.source) ?? literal((node.argument as Node | undefined)?.literal), node, true)
        break
      case "TSImportEqualsDeclaration": {
        const reference = node.moduleReference as Node
        if (reference.type === "TSExternalModuleReference") {
          add(literal(reference.expression), node, node.importKind === "type")
        }
        break
      }
      case "CallExpression": {
        const callee = node.callee as Node
        const args = node.arguments as ReadonlyArray<unknown>
        if (callee.type === "Identifier" && callee.name === "require") add(literal(args[0]), node, false)
        break
      }
    }
  }
  return found
}

const imports: ReadonlyMap<string, ReadonlyArray<Import>> = new Map(
  sources.map((s) => [s.file, importsOf(s)])
)

/** The repository path a relative specifier of `file` names, or undefined for a package. */
const resolveRelative = (file: string, specifier: string): string | undefined => {
  if (!specifier.startsWith(".")) return undefined
  return path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier))
}

// --- module-level state -------------------------------------------------------------------------

const unwrap = (node: Node): Node => {
  let current = node
  while (
    current.type === "TSAsExpression" || current.type === "TSSatisfiesExpression" ||
    current.type === "TSNonNullExpression" || current.type === "ParenthesizedExpression"
  ) current = current.expression as Node
  return current
}

/** `a.b.c` for an identifier or a chain of non-computed member accesses; undefined otherwise. */
const dotted = (node: Node): string | undefined => {
  const n = unwrap(node)
  if (n.type === "Identifier") return n.name as string
  if (n.type === "MemberExpression" && n.computed === false) {
    const object = dotted(n.object as Node)
    return object === undefined ? undefined : `${object}.${(n.property as Node).name as string}`
  }
  return undefined
}

/** The identifier a member chain starts from: `x` of `x.a[b].c`. */
const rootName = (node: Node): string | undefined => {
  let n = unwrap(node)
  while (n.type === "MemberExpression") n = unwrap(n.object as Node)
  return n.type === "Identifier" ? n.name as string : undefined
}

/** Whether the source changes the value bound to `name` anywhere: its elements, entries or fields. */
const mutated = (source: Source, name: string): boolean => {
  for (const node of walk(source.program)) {
    if (node.type === "AssignmentExpression" || node.type === "UpdateExpression") {
      const target = unwrap((node.left ?? node.argument) as Node)
      if (target.type === "MemberExpression" && rootName(target) === name) return true
    }
    if (
      node.type === "UnaryExpression" && node.operator === "delete" &&
      rootName(node.argument as Node) === name
    ) {
      return true
    }
    if (node.type === "CallExpression") {
      const callee = unwrap(node.callee as Node)
      const args = node.arguments as ReadonlyArray<Node>
      if (
        callee.type === "MemberExpression" && callee.computed === false &&
        mutators.has((callee.property as Node).name as string) && rootName(callee.object as Node) === name
      ) return true
      const called = dotted(callee)
      if (
        (called === "Object.assign" || called === "Object.defineProperty" || called === "Reflect.set") &&
        args[0] !== undefined && rootName(args[0]) === name
      ) return true
    }
  }
  return false
}

interface Finding {
  readonly where: string
  readonly what: string
}

/** Why the top-level binding `name = init` holds state, or undefined when it does not. */
const stateIn = (source: Source, name: string, init: Node | null): string | undefined => {
  if (init === null) return undefined
  const value = unwrap(init)
  if (value.type === "NewExpression") {
    const constructor = dotted(value.callee as Node) ?? "?"
    if (!statelessConstructors.has(constructor)) return `a module-level new ${constructor}`
    if (constructor === "RegExp") {
      const flags = literal((value.arguments as ReadonlyArray<Node>)[1]) ?? ""
      if (/[gy]/.test(flags)) return "a module-level RegExp with the g or y flag (its lastIndex is state)"
    }
    return undefined
  }
  if (value.type === "RegExpLiteral" || (value.type === "Literal" && value.regex !== undefined)) {
    const flags = ((value.regex as { flags?: string } | undefined)?.flags) ?? ""
    return /[gy]/.test(flags)
      ? "a module-level RegExp with the g or y flag (its lastIndex is state)"
      : undefined
  }
  if (value.type === "CallExpression") {
    const called = dotted(value.callee as Node)
    if (called !== undefined && stateMakers.test(called)) return `a module-level ${called}(...)`
    return undefined
  }
  if ((value.type === "ArrayExpression" || value.type === "ObjectExpression") && mutated(source, name)) {
    return `a module-level ${value.type === "ArrayExpression" ? "array" : "object"} that the module changes`
  }
  return undefined
}

const moduleState = (source: Source): Array<Finding> => {
  const findings: Array<Finding> = []
  const where = (node: Node) => `${source.file}:${source.lineOf(node.start)}`
  for (const statement of source.program.body as ReadonlyArray<Node>) {
    const declaration =
      (statement.type === "ExportNamedDeclaration" || statement.type === "ExportDefaultDeclaration")
        ? statement.declaration as Node | null
        : statement
    if (declaration === null || declaration === undefined) continue
    if (declaration.type === "VariableDeclaration") {
      for (const declarator of declaration.declarations as ReadonlyArray<Node>) {
        const id = declarator.id as Node
        const name = id.type === "Identifier" ? id.name as string : source.text.slice(id.start, id.end)
        if (stateAllowed.has(`${source.file}:${name}`)) continue
        if (declaration.kind !== "const") {
          findings.push({
            where: where(declarator),
            what: `module-level ${declaration.kind as string} ${name}`
          })
          continue
        }
        const why = stateIn(source, name, declarator.init as Node | null)
        if (why !== undefined) findings.push({ where: where(declarator), what: `${name}: ${why}` })
      }
    }
    if (declaration.type === "ClassDeclaration") {
      const className = (declaration.id as Node | null)?.name as string | undefined ?? "default"
      for (const member of (declaration.body as Node).body as ReadonlyArray<Node>) {
        if (member.type === "PropertyDefinition" && member.static === true && member.readonly !== true) {
          const name = `${className}.${(member.key as Node).name as string}`
          if (!stateAllowed.has(`${source.file}:${name}`)) {
            findings.push({ where: where(member), what: `${name}: a static field that is not readonly` })
          }
        }
      }
    }
  }
  return findings
}

// --- cycles -------------------------------------------------------------------------------------

/** The strongly connected components of more than one module, or of one that imports itself. */
const cyclesOf = (graph: ReadonlyMap<string, ReadonlyArray<string>>): Array<Array<string>> => {
  let counter = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: Array<string> = []
  const onStack = new Set<string>()
  const components: Array<Array<string>> = []
  const visit = (v: string) => {
    index.set(v, counter)
    low.set(v, counter)
    counter++
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!))
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: Array<string> = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(component.sort())
    }
  }
  for (const v of graph.keys()) if (!index.has(v)) visit(v)
  return components
}

/** One shortest cycle through `start` inside `component`, as `a -> b -> a`. */
const cycleThrough = (
  graph: ReadonlyMap<string, ReadonlyArray<string>>,
  component: ReadonlyArray<string>,
  start: string
): string => {
  const inside = new Set(component)
  const previous = new Map<string, string>()
  const queue = [start]
  while (queue.length > 0) {
    const v = queue.shift()!
    for (const w of graph.get(v) ?? []) {
      if (!inside.has(w)) continue
      if (w === start) {
        const between: Array<string> = []
        for (let u: string | undefined = v; u !== undefined && u !== start; u = previous.get(u)) {
          between.unshift(u)
        }
        return [start, ...between, start].join(" -> ")
      }
      if (!previous.has(w)) {
        previous.set(w, v)
        queue.push(w)
      }
    }
  }
  return component.join(", ")
}

// --- the checks ---------------------------------------------------------------------------------

const report = (findings: ReadonlyArray<Finding | string>): string =>
  findings.map((f) => typeof f === "string" ? `  ${f}` : `  ${f.where}: ${f.what}`).join("\n")

describe("Layout", () => {
  it("reads every module of src/", () => {
    assert.isAbove(sources.length, 10)
    assert.ok(sources.some((s) => s.file === "src/index.ts"))
  })

  it("ssh2 is imported only by the SSH adapter", () => {
    const findings: Array<Finding> = []
    for (const [file, list] of imports) {
      if (file.startsWith(sshAdapter)) continue
      for (const i of list) {
        if (i.specifier === "ssh2" || i.specifier.startsWith("ssh2/")) {
          findings.push({
            where: `${file}:${i.line}`,
            what: `imports ${i.specifier}${i.typeOnly ? " (types)" : ""}`
          })
        }
      }
    }
    assert.strictEqual(report(findings), "", `ssh2 outside ${sshAdapter}:\n${report(findings)}`)
  })

  it("no import cycle among the modules of src/", () => {
    const known = new Set(sources.map((s) => s.file))
    const graph = new Map<string, Array<string>>()
    const unresolved: Array<Finding> = []
    for (const [file, list] of imports) {
      const targets: Array<string> = []
      for (const i of list) {
        const target = resolveRelative(file, i.specifier)
        if (target === undefined) continue
        if (known.has(target)) targets.push(target)
        else {unresolved.push({
            where: `${file}:${i.line}`,
            what: `${i.specifier} names no .ts module of src/`
          })}
      }
      graph.set(file, [...new Set(targets)])
    }
    // An import this check cannot follow could hide a cycle, so it is a failure of its own.
    assert.strictEqual(report(unresolved), "", `imports not followed:\n${report(unresolved)}`)
    // A hop made of type imports only is marked, since it is the cheaper one to cut.
    const typeHops = new Set<string>()
    const valueHops = new Set<string>()
    for (const [file, list] of imports) {
      for (const i of list) {
        const target = resolveRelative(file, i.specifier)
        if (target !== undefined) (i.typeOnly ? typeHops : valueHops).add(`${file} -> ${target}`)
      }
    }
    for (const hop of valueHops) typeHops.delete(hop)
    const cycles = cyclesOf(graph).map((component) => {
      const hops = cycleThrough(graph, component, component[0]!).split(" -> ")
      return hops.map((hop, i) =>
        i === 0 ? hop : `${typeHops.has(`${hops[i - 1]} -> ${hop}`) ? "-(types)->" : "->"} ${hop}`
      ).join(" ")
    })
    assert.strictEqual(report(cycles), "", `import cycles:\n${report(cycles)}`)
  })

  it(`no module of src/ over ${maxLines} lines`, () => {
    const findings = sources
      .map((s) => ({
        file: s.file,
        lines: s.text.endsWith("\n") ? s.text.split("\n").length - 1 : s.text.split("\n").length
      }))
      .filter((s) => s.lines > maxLines)
      .map((s) => ({ where: s.file, what: `${s.lines} lines` }))
    assert.strictEqual(report(findings), "", `modules over ${maxLines} lines:\n${report(findings)}`)
  })

  it("no module-level mutable state in src/", () => {
    const findings = sources.flatMap(moduleState)
    assert.strictEqual(report(findings), "", `module-level state:\n${report(findings)}`)
  })

  it("node:fs is imported only by the listed adapters", () => {
    const findings: Array<Finding | string> = []
    const importers = new Set<string>()
    for (const [file, list] of imports) {
      for (const i of list) {
        if (!fsModules.has(i.specifier)) continue
        importers.add(file)
        if (!fsAllowed.includes(file)) {
          findings.push({ where: `${file}:${i.line}`, what: `imports ${i.specifier}` })
        }
      }
    }
    for (const file of fsAllowed) {
      if (!importers.has(file)) {
        findings.push(`${file} is listed but imports no node:fs: take it off the list`)
      }
    }
    assert.strictEqual(report(findings), "", `node:fs outside the adapters:\n${report(findings)}`)
  })
})

// The checks above would pass on an empty or misread tree; these make sure the readers see what
// they are meant to.
describe("Layout's readers", () => {
  const fake = (file: string, text: string): Source => {
    const program = parseAst(text, { lang: "ts" }) as unknown as Node
    return { file, text, program, lineOf: () => 1 }
  }

  it("find every kind of import", () => {
    const source = fake(
      "src/X.ts",
      [
        `import type { A } from "ssh2"`,
        `export * from "./a.ts"`,
        `export type { B } from "./b.ts"`,
        `type C = import("ssh2/lib/x").C`,
        `const load = () => import("node:fs")`,
        `// import "commented"`,
        `const s = 'from "string"'`
      ].join("\n")
    )
    assert.deepStrictEqual(
      importsOf(source).map((i) => `${i.specifier}${i.typeOnly ? ":type" : ""}`),
      ["ssh2:type", "./a.ts", "./b.ts:type", "ssh2/lib/x:type", "node:fs"]
    )
  })

  it("find module-level state and leave constants alone", () => {
    const source = fake(
      "src/X.ts",
      [
        `let count = 0`,
        `export const cache = new Map<string, number>()`,
        `const list: Array<number> = []`,
        `const add = (n: number) => list.push(n)`,
        `const table = { a: 1 }`,
        `const set = (v: number) => { table.a = v }`,
        `const frozen = ["a", "b"] as const`,
        `const encoder = new TextEncoder()`,
        `const pattern = new RegExp("x")`,
        `const global = /x/g`,
        `const ref = MutableRef.make(0)`,
        `class K { static n = 0; static readonly m = 1 }`
      ].join("\n")
    )
    assert.deepStrictEqual(moduleState(source).map((f) => f.what.split(":")[0]), [
      "module-level let count",
      "cache",
      "list",
      "table",
      "global",
      "ref",
      "K.n"
    ])
  })

  it("find a cycle and its path", () => {
    const graph = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]])
    const cycles = cyclesOf(graph)
    assert.deepStrictEqual(cycles, [["a", "b", "c"]])
    assert.strictEqual(cycleThrough(graph, cycles[0]!, "a"), "a -> b -> c -> a")
  })
})
