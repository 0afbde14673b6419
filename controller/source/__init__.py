"""Git, the desired state's source: files of a revision (`git`), the repository a controller
follows (`repository`), and revert commits (`rollback`)."""
