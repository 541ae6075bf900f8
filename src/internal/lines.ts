/**
 * Cuts a byte stream into whole lines as it arrives, so that output can be printed line by line
 * while a command runs, and keeps the exact text for the command's result. Multi-byte
 * characters split across chunks are decoded correctly.
 *
 * The work is linear in the output, however it is cut into lines: each chunk is searched once,
 * and the unfinished line is kept as a list of its chunks, joined once when it ends. (Appending
 * to one string and searching all of it again on every chunk made a 50 MB line, or a long
 * progress bar of `\r` without a newline, quadratic: minutes of CPU and gigabytes of memory.)
 */
export class LineBuffer {
  // ignoreBOM: a U+FEFF at the start is part of the output, not a marker to drop.
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true })
  private readonly kept: Array<string> = []
  /** The chunks of the line not ended yet. */
  private parts: Array<string> = []
  private readonly keep: boolean

  /** With `keep: false` (`discardOutput`), lines are still cut but no text is kept. */
  constructor(keep = true) {
    this.keep = keep
  }

  /** Adds a chunk and returns the lines it completed (without their terminators). */
  push(chunk: Uint8Array | string): ReadonlyArray<string> {
    const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true })
    if (text === "") return []
    if (this.keep) this.kept.push(text)
    if (!text.includes("\n")) {
      this.parts.push(text)
      return []
    }
    const lines = text.split("\n")
    const rest = lines.pop()!
    if (this.parts.length > 0) {
      this.parts.push(lines[0]!)
      lines[0] = this.parts.join("")
    }
    this.parts = rest === "" ? [] : [rest]
    for (let i = 0; i < lines.length; i++) lines[i] = stripCr(lines[i]!)
    return lines
  }

  /** Returns what is left after the last newline, if anything, once the stream has ended. */
  end(): ReadonlyArray<string> {
    const tail = this.decoder.decode()
    if (this.keep && tail !== "") this.kept.push(tail)
    if (tail !== "") this.parts.push(tail)
    const rest = this.parts.join("")
    this.parts = []
    return rest === "" ? [] : [stripCr(rest)]
  }

  /** Everything pushed so far, exactly as decoded (empty when not keeping). */
  text(): string {
    // Joined once: a result and a time-out may each ask for it.
    if (this.kept.length > 1) this.kept.splice(0, this.kept.length, this.kept.join(""))
    return this.kept[0] ?? ""
  }
}

// A pty ends lines with \r\n.
const stripCr = (line: string): string => line.endsWith("\r") ? line.slice(0, -1) : line
