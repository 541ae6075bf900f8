/**
 * A task's input Schema as command-line flags: each field of a `Schema.Struct` becomes a flag
 * named after it in kebab-case, typed from the field's encoded form (what crosses the process
 * boundary), so the values the flags give are what the Schema decodes. The decode then checks
 * every constraint (an `Int`, a pattern, a range) before any host is touched. A `Redacted` field
 * is `--<name>-env VARIABLE`: a secret on the command line would be in the process table.
 */
import * as Flag from "effect/cli/Flag"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import type { Task } from "../../Task.ts"

/**
 * One derived flag: the field it fills and how it reads its value. A `secret` flag's value is the
 * name of the environment variable that holds the field's value.
 */
export interface TaskFlag {
  readonly field: string
  readonly flag: string
  readonly secret: boolean
  readonly param: Flag.Flag<Option.Option<unknown>>
}

/** A task's input as flags, or why it cannot be given as flags. */
export type TaskFlags =
  | { readonly _tag: "None" }
  | { readonly _tag: "Struct"; readonly flags: ReadonlyArray<TaskFlag> }
  | { readonly _tag: "Json"; readonly param: Flag.Flag<Option.Option<string>> }
  | { readonly _tag: "Invalid"; readonly message: string }

/** `releaseTag` -> `release-tag`. */
export const kebab = (name: string): string =>
  name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/_/g, "-").toLowerCase()

const stripUndefined = (ast: AST.AST): AST.AST => {
  if (ast._tag !== "Union") return ast
  const kept = ast.types.filter((t) => t._tag !== "Undefined")
  return kept.length === 1 ? kept[0]! : ast
}

const literalsOf = (ast: AST.AST): ReadonlyArray<readonly [string, unknown]> | undefined => {
  if (ast._tag === "Literal") return [[String(ast.literal), ast.literal]]
  if (ast._tag === "Enum") return ast.enums.map(([, value]) => [String(value), value] as const)
  if (ast._tag === "Union") {
    const all: Array<readonly [string, unknown]> = []
    for (const member of ast.types) {
      const inner = literalsOf(member)
      if (inner === undefined) return undefined
      all.push(...inner)
    }
    return all
  }
  return undefined
}

// A `Schema.Redacted` field: its value must not be given on the command line, where every user of
// the machine can read it in the process table.
const isRedacted = (ast: AST.AST): boolean =>
  ast._tag === "Declaration" &&
  (ast.annotations?.["representation"] as { readonly id?: unknown } | undefined)?.id ===
    "effect/schema/Redacted"

// The flag of one field, before it is made optional: typed as the field's encoded form.
const flagOf = (name: string, ast: AST.AST): { readonly flag: Flag.Flag<unknown>; readonly kind: string } => {
  const choices = literalsOf(ast)
  if (choices !== undefined && choices.length > 0) {
    return { flag: Flag.ChoiceWithValue(name, choices), kind: choices.map(([label]) => label).join("|") }
  }
  switch (ast._tag) {
    case "String":
    case "TemplateLiteral":
      return { flag: Flag.String(name), kind: "string" }
    case "Number":
      return { flag: Flag.Finite(name), kind: "number" }
    case "Boolean":
      return { flag: Flag.Boolean(name), kind: "boolean" }
    default:
      // Arrays, records and the rest are given as JSON and decoded by the Schema.
      return {
        flag: Flag.String(name).pipe(
          Flag.withMetavar("json"),
          Flag.mapTryCatch((text) => JSON.parse(text) as unknown, (error) => `not JSON: ${String(error)}`)
        ),
        kind: "json"
      }
  }
}

/**
 * The flags of a task's input. `reserved` are the names of the command's own flags: a field
 * that would shadow one is reported, not silently lost.
 */
export const taskFlags = (
  task: Task<unknown, unknown, unknown>,
  reserved: ReadonlySet<string>
): TaskFlags => {
  const encoded = AST.toEncoded(task.input.ast)
  if (encoded._tag === "Void" || encoded._tag === "Undefined") return { _tag: "None" }
  if (encoded._tag !== "Objects" || encoded.indexSignatures.length > 0) {
    return {
      _tag: "Json",
      param: Flag.optional(
        Flag.String("input").pipe(
          Flag.withMetavar("json"),
          Flag.withDescription("the task's input, as JSON (its Schema is not a Struct)")
        )
      )
    }
  }
  // A secret is known by its decoded side: `RedactedFromValue(Schema.String)` is a plain string
  // once encoded, and would otherwise be a flag whose value is the secret.
  const decoded = AST.toType(task.input.ast)
  const secrets = new Set(
    decoded._tag === "Objects"
      ? decoded.propertySignatures.filter((p) => isRedacted(stripUndefined(p.type))).map((p) => p.name)
      : []
  )
  const flags: Array<TaskFlag> = []
  for (const property of encoded.propertySignatures) {
    if (typeof property.name !== "string") continue
    const secret = secrets.has(property.name)
    const name = kebab(property.name) + (secret ? "-env" : "")
    const twin = flags.find((flag) => flag.flag === name)
    if (twin !== undefined) {
      return {
        _tag: "Invalid",
        message:
          `the task's input fields "${twin.field}" and "${property.name}" would both be the flag --${name}; rename one`
      }
    }
    if (reserved.has(name)) {
      return {
        _tag: "Invalid",
        message:
          `the task's input field "${property.name}" would be the flag --${name}, which threadbare uses itself; rename the field`
      }
    }
    const optional = AST.isOptional(property.type)
    const { flag, kind } = secret
      ? {
        flag: Flag.String(name).pipe(Flag.withMetavar("name")),
        kind: "secret, read from this environment variable"
      }
      : flagOf(name, stripUndefined(property.type))
    const description = AST.resolveDescription(property.type)
    const described = Flag.withDescription(
      flag,
      `${description === undefined ? "" : `${description} `}(task input ${property.name}: ${kind}${
        optional ? ", optional" : ""
      })`
    )
    // A boolean flag left out is false; other required fields are left to the Schema, so that its
    // message names the missing field.
    const param = kind === "boolean" && !optional
      ? Flag.map(Flag.withDefault(described, false), Option.some)
      : Flag.optional(described)
    flags.push({ field: property.name, flag: name, secret, param })
  }
  return { _tag: "Struct", flags }
}

/** The failure of a task's input: which flag, and what the Schema says about its value. */
export class InputError extends Schema.TaggedError<InputError>()("InputError", {
  message: Schema.String
}) {}

// The first field an issue points at: issues nest (a struct's issue holds one per field), and
// a pointer carries the path of the field below it.
const firstField = (issue: unknown): string | undefined => {
  if (typeof issue !== "object" || issue === null) return undefined
  const node = issue as { readonly path?: unknown; readonly issue?: unknown; readonly issues?: unknown }
  if (Array.isArray(node.path) && typeof node.path[0] === "string") return node.path[0]
  if (Array.isArray(node.issues)) {
    for (const inner of node.issues) {
      const found = firstField(inner)
      if (found !== undefined) return found
    }
  }
  return firstField(node.issue)
}

/**
 * Decodes the parsed flags with the task's input Schema. A failure names the flag of the field
 * at fault, so the user knows what to change.
 */
export const decodeInput = (
  task: Task<unknown, unknown, unknown>,
  derived: TaskFlags,
  values: ReadonlyArray<Option.Option<unknown>>
): Effect.Effect<unknown, InputError> => {
  const encoded: Effect.Effect<unknown, InputError> = Effect.suspend(() => {
    switch (derived._tag) {
      case "None":
      case "Invalid":
        return Effect.succeed(undefined)
      case "Json": {
        const text = values[0] as Option.Option<string> | undefined
        return text === undefined || Option.isNone(text) ? Effect.succeed(undefined) : Effect.try({
          try: () => JSON.parse(text.value) as unknown,
          catch: (error) => new InputError({ message: `--input: not JSON: ${String(error)}` })
        })
      }
      case "Struct": {
        // A secret arrives as text, but is decoded from its JSON form: a `Redacted(Schema.Int)`
        // wants a number there.
        const json = AST.toEncoded(Schema.toCodecJson(task.input).ast)
        const jsonKind = (field: string) =>
          json._tag === "Objects"
            ? stripUndefined(json.propertySignatures.find((p) => p.name === field)?.type ?? json)._tag
            : undefined
        const record: Record<string, unknown> = {}
        for (const [index, flag] of derived.flags.entries()) {
          const value = values[index]
          if (value === undefined || Option.isNone(value)) continue
          if (!flag.secret) {
            record[flag.field] = value.value
            continue
          }
          const variable = String(value.value)
          const secret = process.env[variable]
          if (secret === undefined) {
            return Effect.fail(
              new InputError({ message: `--${flag.flag}: the environment variable ${variable} is not set` })
            )
          }
          const kind = jsonKind(flag.field)
          record[flag.field] = kind === "Number" && secret.trim() !== "" && Number.isFinite(Number(secret))
            ? Number(secret)
            : kind === "Boolean" && (secret === "true" || secret === "false")
            ? secret === "true"
            : secret
        }
        return Effect.succeed(record)
      }
    }
  })
  // Decoded as the task's input is when it crosses to a worker process: from JSON, so that a
  // `Redacted` field takes its secret as a string (and a `Date` field an ISO date).
  return Effect.flatMap(
    encoded,
    (value) =>
      Schema.decodeUnknownEffect(Schema.toCodecJson(task.input))(value).pipe(
        Effect.mapError((error) => {
          const field = firstField(error.issue)
          const flag = derived._tag === "Struct"
            ? derived.flags.find((f) => f.field === field)?.flag
            : undefined
          const where = field === undefined ? "task input" : `--${flag ?? kebab(field)}`
          return new InputError({ message: `${where}: ${error.message}` })
        })
      )
  )
}
