/**
 * Builds the API reference: the JSDoc of every public module (`src/*.ts`, less `src/index.ts`
 * which only re-exports them) rendered by TypeDoc as a static HTML site in `docs/api/`
 * (git-ignored). The options are in `typedoc.json`; any warning fails the build: a {@link} that
 * resolves to nothing, a public type whose page would point into `src/internal/`, and (from
 * `scripts/typedoc-since.ts`) an export without `@since`.
 *
 *   scripts/node.sh node scripts/api-docs.ts     (or: npm run docs)
 *
 * TypeDoc is built on the TypeScript compiler's JavaScript API, which the project's own compiler
 * (TypeScript 7, the native one) no longer ships. So the project also depends on TypeScript 6
 * under the name `typescript-6`, and this script makes TypeDoc's `import "typescript"` load that
 * one; the project's `tsc` stays TypeScript 7. (package.json's `overrides` lets TypeDoc's peer
 * dependency on TypeScript accept the project's 7, since npm cannot install a second
 * `typescript` for it; the import is redirected here instead.)
 *
 * Extra arguments are passed to TypeDoc, e.g. `npm run docs -- --out .tmp/api`.
 */
import * as fs from "node:fs"
import * as module from "node:module"
import * as path from "node:path"

const typedoc = import.meta.resolve("typedoc")

module.registerHooks({
  resolve: (specifier, context, nextResolve) =>
    specifier === "typescript" && context.parentURL?.includes("/node_modules/typedoc/")
      ? nextResolve("typescript-6", context)
      : nextResolve(specifier, context)
})

const root = path.resolve(import.meta.dirname, "..")
process.chdir(root)

// TypeDoc's command line exits the process itself; count what it wrote once it has succeeded.
process.on("exit", (code) => {
  if (code !== 0) return
  const outArg = process.argv.indexOf("--out")
  const out = path.resolve(
    outArg > 0 ? process.argv[outArg + 1]! : JSON.parse(fs.readFileSync("typedoc.json", "utf8")).out
  )
  const pages = fs.readdirSync(out, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".html"))
  const modules = pages.filter((f) => /^modules[/\\][^/\\]+\.html$/.test(f)).length
  console.log(`api reference: ${modules} modules, ${pages.length} pages in ${path.relative(root, out)}/`)
})

await import(new URL("cli.js", typedoc).href)
