from tuning.search import main

raise SystemExit(main())
