/**
 * A TypeDoc plugin (named in `typedoc.json`) that warns about every public module, and every export
 * of one, whose docs have no `@since` tag, as Effect's own modules require; the warning fails
 * `npm run docs` like TypeDoc's own.
 */
import { type Application, type Context, Converter, ReflectionKind } from "typedoc"

export const load = (app: Application): void => {
  app.converter.on(Converter.EVENT_RESOLVE_END, (context: Context) => {
    for (const module of context.project.getChildrenByKind(ReflectionKind.Module)) {
      // TypeDoc takes a file's first comment for the module's only when it says `@module`.
      if (module.comment?.getTag("@since") === undefined) {
        app.logger.warn(`module ${module.name} has no docs with @module and @since`)
      }
      for (const child of module.children ?? []) {
        // A second export of a declaration is a reference to the first, which carries the docs.
        if (child.kindOf(ReflectionKind.Reference)) continue
        const comment = child.comment ?? child.signatures?.[0]?.comment
        if (comment?.getTag("@since") === undefined) {
          app.logger.warn(`${child.getFriendlyFullName()} has no @since tag`)
        }
      }
    }
  })
}
