from mocomri.cli import main

raise SystemExit(main())
