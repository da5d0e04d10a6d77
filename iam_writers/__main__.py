from iam_writers.cli import main

raise SystemExit(main())
