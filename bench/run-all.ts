/**
 * Runs every benchmark `bench/*.ts` (but this file and lib.ts), one child process at a time, then
 * prints one markdown table of their summary rows, ready for the README.
 *
 *   npm run bench                  all of them
 *   npm run bench -- remote        only those whose name contains "remote"
 *   BENCH_N=50 npm run bench       fewer iterations (each benchmark says what N counts)
 *
 * Exits non-zero when a benchmark did (a benchmark only fails when commands failed).
 */
import { spawn } from "node:child_process"
import { readdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import {
  fmt,
  machineNote,
  now,
  ROW_PREFIX,
  ROWS_ENV,
  SUMMARY_HEADER,
  summaryCells,
  type SummaryRow,
  table
} from "./lib.ts"

const dir = fileURLToPath(new URL(".", import.meta.url))
const filters = process.argv.slice(2)
const benchmarks = readdirSync(dir)
  // Task modules (`*-tasks.ts`) are imported by the benchmarks' workers, not benchmarks themselves.
  .filter((f) => f.endsWith(".ts") && f !== "lib.ts" && f !== "run-all.ts" && !f.endsWith("-tasks.ts"))
  .filter((f) => filters.length === 0 || filters.some((part) => f.includes(part)))
  .sort()

/** Runs one benchmark, passing its output through but for the summary lines, which it returns. */
const run = (file: string): Promise<{ code: number; rows: Array<SummaryRow> }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [`${dir}${file}`], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, [ROWS_ENV]: "1" }
    })
    const rows: Array<SummaryRow> = []
    let pending = ""
    const take = (line: string) => {
      if (line.startsWith(ROW_PREFIX)) rows.push(JSON.parse(line.slice(ROW_PREFIX.length)) as SummaryRow)
      else process.stdout.write(`${line}\n`)
    }
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => {
      pending += chunk
      const lines = pending.split("\n")
      pending = lines.pop() ?? ""
      lines.forEach(take)
    })
    child.on("close", (code, signal) => {
      if (pending !== "") take(pending)
      resolve({ code: code ?? (signal === null ? 1 : 128), rows })
    })
  })

console.log(await machineNote())
const all: Array<SummaryRow> = []
const failed: Array<string> = []
for (const file of benchmarks) {
  console.log(`\n## ${file}\n`)
  const start = now()
  const { code, rows } = await run(file)
  console.log(
    `(${file}: ${fmt((now() - start) / 1000)} s${code === 0 ? "" : `, FAILED with exit code ${code}`})`
  )
  if (code !== 0) failed.push(file)
  all.push(...rows)
}

console.log("\n## Summary\n")
console.log(table(SUMMARY_HEADER, all.map(summaryCells)))
if (failed.length > 0) {
  console.log(`\nFailed: ${failed.join(", ")}`)
  process.exitCode = 1
}
