/**
 * Option values as OpenSSH reads them, the same whichever reader (`ssh -G` or the built-in one)
 * produced them.
 */

// A yes/no value as OpenSSH reads it, whatever its case, `true` and `false` included (the
// built-in reader passes values as written); any other value as it is.
export const flag = (value: string | undefined): string | undefined => {
  const lower = value?.toLowerCase()
  return lower === "yes" || lower === "true" ? "yes" : lower === "no" || lower === "false" ? "no" : value
}

// The files of `UserKnownHostsFile`, which both readers print on one line, joined by spaces:
// a name starts at an absolute (or `~`) path, so that a path holding a space stays one file.
export const filesOf = (value: string | undefined): Array<string> | undefined =>
  value?.split(/\s+/).filter((word) => word !== "").reduce<Array<string>>((files, word) => {
    if (files.length === 0 || word.startsWith("/") || word.startsWith("~")) files.push(word)
    else files[files.length - 1] += ` ${word}`
    return files
  }, [])
